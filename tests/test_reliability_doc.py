"""docs/RELIABILITY.md and the tests agree both ways.

Each row of its tables (the fault scenarios R1-R31, the security scenarios S1-S55) names the
tests that prove it, and each of those tests carries the row's id as a marker,
`@pytest.mark.scenario("S17")` (on the function, on one of its parameters or on the module). So:
every row names at least one test, every test a row names exists and is marked with the row's
id, and every id a test is marked with has a row.

The marks are read from the source with `ast` (collecting the whole suite would take half a
minute); the last test checks that reading against the marks pytest itself put on the items it
collected in this run.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPOSITORY = TESTS.parent
DOCUMENT = REPOSITORY / "docs" / "RELIABILITY.md"
# Where a security row's bare file names live (its column says `tests/security/…`).
SECURITY = "tests/security"

ROW = re.compile(r"^\| (?P<id>[SR]\d+[a-z]?(?:-[a-z]+)?) \|", re.MULTILINE)
SCENARIO_ID = re.compile(r"[SR]\d+[a-z]?(?:-[a-z]+)?")
# `tests/faults/test_x.py::test_y`, `test_x.py::test_y`, `test_x.py`, and `…::test_y` (the
# file named last in the row).
REFERENCE = re.compile(
    r"(?P<file>(?:tests/(?:\w+/)*)?test_\w+\.py|…(?=::))(?:::(?P<function>test_\w+))?"
)


@dataclass(frozen=True)
class Reference:
    path: str  # relative to the repository
    function: str | None  # None: the whole file


def rows() -> dict[str, list[Reference]]:
    """Every table row's id and the tests it names (a row whose id repeats gets both lists)."""
    found: dict[str, list[Reference]] = {}
    for line in DOCUMENT.read_text(encoding="utf-8").splitlines():
        row = ROW.match(line)
        if row is None:
            continue
        references = found.setdefault(row["id"], [])
        current = None
        for span in re.findall(r"`([^`]*)`", line):
            for match in REFERENCE.finditer(span):
                if match["file"] != "…":
                    name = match["file"]
                    current = name if name.startswith("tests/") else f"{SECURITY}/{name}"
                assert current is not None, f"{row['id']}: `…` before any file in {span!r}"
                references.append(Reference(current, match["function"]))
    return found


def _ids_in(node: ast.AST | None, assigned: dict[str, ast.expr], seen: frozenset[str]) -> set[str]:
    """The ids of every `pytest.mark.scenario(...)` inside `node`, following the names of the
    module's own assignments (a list of `pytest.param(..., marks=...)`, a `pytestmark`)."""
    ids: set[str] = set()
    for sub in ast.walk(node) if node is not None else ():
        if isinstance(sub, ast.Call) and ast.unparse(sub.func).endswith("mark.scenario"):
            for argument in sub.args:
                assert isinstance(argument, ast.Constant), ast.unparse(sub)
                assert SCENARIO_ID.fullmatch(str(argument.value)), ast.unparse(sub)
                ids.add(str(argument.value))
        elif isinstance(sub, ast.Name) and sub.id in assigned and sub.id not in seen:
            ids |= _ids_in(assigned[sub.id], assigned, seen | {sub.id})
    return ids


@cache
def scenario_marks(path: Path) -> dict[str, set[str]]:
    """Each test function of the module at `path` and the scenario ids it is marked with."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    assigned = {
        target.id: node.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    module = _ids_in(assigned.get("pytestmark"), assigned, frozenset({"pytestmark"}))
    return {
        node.name: module.union(*(_ids_in(d, assigned, frozenset()) for d in node.decorator_list))
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
    }


def marked_ids() -> set[str]:
    """Every scenario id some test under tests/ is marked with."""
    return {
        scenario
        for path in TESTS.rglob("test_*.py")
        if "node_modules" not in path.parts
        for ids in scenario_marks(path).values()
        for scenario in ids
    }


def test_every_row_names_tests_that_exist_and_carry_its_id() -> None:
    problems = []
    for scenario, references in rows().items():
        if not references:
            problems.append(f"{scenario}: the row names no test")
        for reference in references:
            path = REPOSITORY / reference.path
            if not path.is_file():
                problems.append(f"{scenario}: {reference.path} does not exist")
                continue
            marks = scenario_marks(path)
            if reference.function is None:
                if not any(scenario in ids for ids in marks.values()):
                    problems.append(f"{scenario}: no test of {reference.path} is marked with it")
            elif reference.function not in marks:
                problems.append(f"{scenario}: {reference.path}::{reference.function} is no test")
            elif scenario not in marks[reference.function]:
                problems.append(
                    f"{scenario}: {reference.path}::{reference.function} is not marked with it"
                )
    assert problems == []


def test_every_row_has_a_marked_test_and_every_marked_id_a_row() -> None:
    documented, marked = set(rows()), marked_ids()

    assert sorted(documented - marked) == [], "rows without a test marked with their id"
    assert sorted(marked - documented) == [], "scenario marks without a row"


def test_the_tables_hold_both_suites() -> None:
    """The parsing itself: both tables are found (a changed layout would pass the checks above
    on no rows at all)."""
    documented = set(rows())

    assert {"S1", "S17", "S53", "R1", "R4-naive", "R22a", "R31-sqlite"} <= documented
    assert len(documented) > 80


def test_the_source_reading_sees_every_mark_pytest_applied(request: pytest.FixtureRequest) -> None:
    """Every scenario mark of every item collected in this run is one `scenario_marks` found
    for its function (a mark written in a form the reading misses would fail here)."""
    missed = []
    for item in request.session.items:
        applied = {scenario for mark in item.iter_markers("scenario") for scenario in mark.args}
        function = getattr(item, "originalname", item.name)
        read = scenario_marks(Path(item.path)).get(function, set())
        if not applied <= read:
            missed.append(f"{item.nodeid}: {sorted(applied - read)}")
    assert missed == []
