"""The README and docs/ hold together: every relative link leads to a file of the repository
(and, with `#anchor`, to one of its headings), and the configuration reference,
docs/configuration.md, matches the code both ways.

The reference's rows are checked against `blog_api.config.ENVIRONMENT_VARIABLES` (the single
place the app reads its settings) and against the variables read outside config.py: by the app
factory, `make run` (scripts/run-stack.sh and the Makefile), gunicorn.conf.py and the Procfile,
found in those files by pattern and listed below by name, so a new one must be added here and
documented. A default the table states plainly (one value in backticks) is the one the code
uses.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from blog_api.config import ENVIRONMENT_VARIABLES, Config, read_environment

REPOSITORY = Path(__file__).resolve().parents[1]
DOCUMENTS = [REPOSITORY / "README.md", *sorted((REPOSITORY / "docs").glob("*.md"))]
CONFIGURATION = REPOSITORY / "docs" / "configuration.md"

# Variables read outside config.py, by the files that read them (the table documents each).
READ_OUTSIDE_CONFIG_PY: dict[str, set[str]] = {
    "FLASK_ENV": {
        "src/blog_api/__init__.py",
        "src/blog_api/config.py",
        "scripts/run-stack.sh",
        "gunicorn.conf.py",
    },
    "INSTANCE_PATH": {"src/blog_api/__init__.py"},
    "WEB_PORT": {"scripts/run-stack.sh"},
    "REDIS_PORT": {"scripts/run-stack.sh"},
    "SMTP_PORT": {"scripts/run-stack.sh"},
    "FLOWER_PORT": {"scripts/run-stack.sh"},
    "VAR_DIR": {"scripts/run-stack.sh"},
    "FLOWER_BASIC_AUTH": {"scripts/run-stack.sh"},
    "VENV": {"scripts/run-stack.sh", "Makefile"},
    "PYTHON": {"Makefile"},
    "GUNICORN_BIND": {"gunicorn.conf.py"},
    "GUNICORN_WORKERS": {"gunicorn.conf.py"},
    "GUNICORN_WORKER_CLASS": {"gunicorn.conf.py"},
    "GUNICORN_TIMEOUT": {"gunicorn.conf.py"},
    "PORT": {"Procfile"},
    # prometheus-client's, set here for the processes that count in it (see READ_BY_LIBRARIES).
    "PROMETHEUS_MULTIPROC_DIR": {"gunicorn.conf.py", "Procfile"},
}
# Variables that libraries read themselves (a row may document them; nothing here reads them).
READ_BY_LIBRARIES = {"PROMETHEUS_MULTIPROC_DIR": "prometheus-client's multiprocess mode"}
LIBRARY_PREFIXES = {"OTEL_": "the OpenTelemetry SDK"}

# How each kind of file reads a variable, and the default it gives it (group 2, when any).
PYTHON_READ = re.compile(
    r"""os\.(?:environ\.get|getenv)\(\s*"([A-Z][A-Z0-9_]*)"(?:\s*,\s*"([^"]*)")?"""
    r"""|os\.environ\[\s*"([A-Z][A-Z0-9_]*)"\s*\]"""
)
SHELL_READ = re.compile(r"\$\{([A-Z][A-Z0-9_]*):?-([^}]*)\}")
PROCFILE_READ = re.compile(r"\$\{?([A-Z][A-Z0-9_]*)")
MAKEFILE_READ = re.compile(r"^([A-Z][A-Z0-9_]*)\s*\?=\s*(.*?)\s*$", re.MULTILINE)


def repository_files() -> Iterator[tuple[str, str]]:
    """(path, text) of every file that reads variables itself: the package (config.py reads
    `FLASK_ENV` so), gunicorn's settings, `make run`'s script and Makefile, the Procfile."""
    for path in sorted((REPOSITORY / "src" / "blog_api").rglob("*.py")):
        yield path.relative_to(REPOSITORY).as_posix(), path.read_text(encoding="utf-8")
    for name in ("gunicorn.conf.py", "scripts/run-stack.sh", "Procfile", "Makefile"):
        yield name, (REPOSITORY / name).read_text(encoding="utf-8")


@cache
def variables_read_outside_the_settings() -> dict[str, dict[str, set[str]]]:
    """variable -> file -> the defaults that file gives it ("" for none)."""
    found: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for name, text in repository_files():
        if name.endswith(".py"):
            for match in PYTHON_READ.finditer(text):
                found[match[1] or match[3]][name].add(match[2] or "")
        elif name.endswith(".sh"):
            for match in SHELL_READ.finditer(text):
                found[match[1]][name].add(match[2])
        elif name == "Procfile":
            for match in PROCFILE_READ.finditer(text):
                found[match[1]][name].add("")
        else:
            for match in MAKEFILE_READ.finditer(text):
                found[match[1]][name].add(match[2])
    # The app's settings are read by config.py alone; the scripts also pass some on.
    return {
        variable: dict(files)
        for variable, files in found.items()
        if variable not in ENVIRONMENT_VARIABLES
    }


@dataclass(frozen=True)
class Row:
    variables: tuple[str, ...]
    default: str  # the cell as written
    line: str

    def plain_defaults(self) -> dict[str, str]:
        """The variables whose default the cell states plainly (one value in backticks each:
        `2`, `19456`, `1` for three variables, or one value for all of them)."""
        parts = [self.default] if len(self.variables) == 1 else self.default.split(", ")
        assert len(parts) in (1, len(self.variables)), f"which default is whose? {self.line}"
        if len(parts) == 1:
            parts *= len(self.variables)
        return {
            variable: plain[1]
            for variable, part in zip(self.variables, parts, strict=True)
            if (plain := re.fullmatch(r"`([^`]+)`", part.strip()))
        }


@cache
def configuration_rows() -> tuple[Row, ...]:
    """Each table row of docs/configuration.md that names variables in its first cell."""
    rows = []
    for line in CONFIGURATION.read_text(encoding="utf-8").splitlines():
        if not line.startswith("| `"):
            continue
        _, variables, default, _ = line.split("|", 3)
        names = re.findall(r"`([^`]*)`", variables)
        assert names, line
        assert all(re.fullmatch(r"[A-Z][A-Z0-9_]*", name) for name in names), line
        rows.append(Row(tuple(names), default.strip(), line))
    return tuple(rows)


def documented_variables() -> set[str]:
    return {variable for row in configuration_rows() for variable in row.variables}


def test_every_setting_of_config_py_has_a_row_in_the_configuration_reference() -> None:
    missing = set(ENVIRONMENT_VARIABLES) - documented_variables()

    assert not missing, f"docs/configuration.md has no row for {sorted(missing)}"


def test_every_variable_read_outside_config_py_is_listed_here_and_has_a_row() -> None:
    """The standard `OTEL_*` variables that tracing.py reads as the SDK does are the SDK's,
    documented with it (docs/operations.md, "Tracing"), not rows of ours."""
    read = {
        variable: set(files)
        for variable, files in variables_read_outside_the_settings().items()
        if not variable.startswith(tuple(LIBRARY_PREFIXES))
    }

    assert read == READ_OUTSIDE_CONFIG_PY
    assert not set(read) - documented_variables()


def test_every_row_names_a_variable_that_something_reads() -> None:
    known = set(ENVIRONMENT_VARIABLES) | set(READ_OUTSIDE_CONFIG_PY) | set(READ_BY_LIBRARIES)
    unknown = {
        variable
        for variable in documented_variables() - known
        if not variable.startswith(tuple(LIBRARY_PREFIXES))
    }

    assert not unknown, f"docs/configuration.md documents variables nothing reads: {unknown}"


def plain_defaults() -> list[tuple[str, str]]:
    return sorted(
        (variable, value)
        for row in configuration_rows()
        for variable, value in row.plain_defaults().items()
    )


@pytest.mark.parametrize(
    ("variable", "documented"),
    [(v, d) for v, d in plain_defaults() if v in ENVIRONMENT_VARIABLES],
)
def test_a_settings_plain_default_is_the_one_config_py_uses(variable: str, documented: str) -> None:
    """As in `.env.example` (S40): the default a reader is told is the one in force."""
    key = ENVIRONMENT_VARIABLES[variable][0]

    assert read_environment({variable: documented})[key] == getattr(Config, key)


@pytest.mark.parametrize(
    ("variable", "documented"),
    [(v, d) for v, d in plain_defaults() if v not in ENVIRONMENT_VARIABLES],
)
def test_a_plain_default_read_outside_config_py_is_the_one_its_reader_uses(
    variable: str, documented: str
) -> None:
    defaults = {
        default
        for defaults in variables_read_outside_the_settings()[variable].values()
        for default in defaults
        if default
    }

    assert documented in defaults


def test_the_plain_defaults_cover_most_settings() -> None:
    """The two tests above check enough rows to mean something (a table whose defaults stopped
    parsing would leave them nothing to check)."""
    checked = {variable for variable, _ in plain_defaults() if variable in ENVIRONMENT_VARIABLES}

    assert len(checked) >= len(ENVIRONMENT_VARIABLES) * 3 // 4


# -- links ---------------------------------------------------------------------------------

FENCE = re.compile(r"^ *```.*?^ *```[^\n]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+).+?\1", re.DOTALL)
INLINE_LINK = re.compile(r"\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.MULTILINE)
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$", re.MULTILINE)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def prose(markdown: str) -> str:
    """The text outside code: links and headings in code blocks and spans are not links."""
    return CODE_SPAN.sub("", FENCE.sub("", markdown))


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: its text, lower-cased, without punctuation (but `-` and
    `_`), spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    """Every heading anchor of a Markdown file, repeated headings numbered as GitHub does."""
    seen: dict[str, int] = defaultdict(int)
    found = set()
    for match in HEADING.finditer(FENCE.sub("", path.read_text(encoding="utf-8"))):
        base = anchor(match[2])
        found.add(base if seen[base] == 0 else f"{base}-{seen[base]}")
        seen[base] += 1
    return frozenset(found)


def relative_links(document: Path) -> list[str]:
    text = prose(document.read_text(encoding="utf-8"))
    targets = INLINE_LINK.findall(text) + REFERENCE_LINK.findall(text)
    return [target for target in targets if not SCHEME.match(target)]


def broken(document: Path, target: str) -> str | None:
    """Why `target`, linked from `document`, leads nowhere (None: it resolves)."""
    location, _, fragment = target.partition("#")
    if location.startswith("/"):
        return "an absolute path: link relative to the document"
    path = (document.parent / location).resolve() if location else document
    if not path.is_relative_to(REPOSITORY):
        return "outside the repository"
    if not path.exists():
        return "no such file"
    if fragment and (path.suffix != ".md" or fragment not in anchors(path)):
        return f"no heading #{fragment} in {path.relative_to(REPOSITORY)}"
    return None


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.relative_to(REPOSITORY).as_posix())
def test_every_relative_link_leads_to_a_file_and_heading_of_the_repository(
    document: Path,
) -> None:
    failures = {
        target: reason
        for target in relative_links(document)
        if (reason := broken(document, target)) is not None
    }

    assert not failures, failures


def test_the_readme_links_to_every_document_of_docs() -> None:
    """A newcomer reaches every topic from the README (and the link check above has links to
    check)."""
    linked = {
        (REPOSITORY / target.partition("#")[0]).resolve()
        for target in relative_links(REPOSITORY / "README.md")
    }

    assert set(DOCUMENTS[1:]) <= linked


@pytest.mark.parametrize(
    ("heading", "expected"),
    [
        (
            "Try it (the tutorial's Postman flow, with curl)",
            "try-it-the-tutorials-postman-flow-with-curl",
        ),
        ("Retrying a create safely: `Idempotency-Key`", "retrying-a-create-safely-idempotency-key"),
        ("Security scenarios S1-S53", "security-scenarios-s1-s53"),
        (
            "Notes per scenario (where the run differs from §6.2)",
            "notes-per-scenario-where-the-run-differs-from-62",
        ),
    ],
)
def test_anchors_are_spelled_as_github_spells_them(heading: str, expected: str) -> None:
    assert anchor(heading) == expected


def test_a_link_to_a_missing_file_or_heading_is_reported(tmp_path: Path) -> None:
    """The check itself: what it must refuse, it refuses."""
    readme = REPOSITORY / "README.md"

    assert broken(readme, "docs/api.md#routes") is None
    assert broken(readme, "docs/nowhere.md") == "no such file"
    assert broken(readme, "docs/api.md#nowhere") == "no heading #nowhere in docs/api.md"
    assert broken(readme, "#architecture") is None
    assert broken(readme, "../outside.md") == "outside the repository"
    assert broken(readme, "/etc/hosts") == "an absolute path: link relative to the document"
    assert relative_links(_markdown(tmp_path, "[a](b.md) `[c](d.md)` [e](https://x.org)")) == [
        "b.md"
    ]


def _markdown(directory: Path, text: str) -> Path:
    path = directory / "sample.md"
    path.write_text(text, encoding="utf-8")
    return path
