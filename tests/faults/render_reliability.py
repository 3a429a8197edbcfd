"""Rewrite the figures table of docs/RELIABILITY.md from a fault-suite figures file.

    FAULT_FIGURES=var/fault-figures.jsonl .venv/bin/pytest tests/faults -m integration
    FAULT_FIGURES=var/fault-figures.jsonl make test-faults-long            # optional
    .venv/bin/python tests/faults/render_reliability.py var/fault-figures.jsonl

Each JSON line is one scenario run (see `report_figures` in tests/faults/conftest.py); the
latest run of each test wins. The table sits between the two marker comments of the document.
"""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]
DOCUMENT = REPOSITORY / "docs" / "RELIABILITY.md"
START, END = "<!-- figures:start -->", "<!-- figures:end -->"


def scenario_key(entry: dict[str, object]) -> tuple[int, str]:
    scenario = str(entry["scenario"])
    number = re.match(r"R(\d+)", scenario)
    return (int(number.group(1)) if number else 999, scenario)


def summary(entry: dict[str, object]) -> str:
    """The first paragraph of the test's docstring, without its "R<n>:" prefix."""
    path, _, name = str(entry["node_id"]).partition("::")
    name = name.split("[", 1)[0]
    try:
        tree = ast.parse((REPOSITORY / path).read_text(encoding="utf-8"))
    except OSError:
        return str(entry["summary"])
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            paragraph = (ast.get_docstring(node) or "").split("\n\n", 1)[0]
            return " ".join(paragraph.split()).split(": ", 1)[-1]
    return str(entry["summary"])


def row(entry: dict[str, object]) -> str:
    f = entry["figures"]
    assert isinstance(f, dict)
    emails = (
        f"{f['emails_expected']} / {f['emails_delivered']} / {f['emails_duplicated']} / "
        f"{f['emails_lost']} / {f['emails_dead']} / {f['emails_ambiguous']}"
    )
    audit = (
        f"{f['audit_expected']} / {f['audit_written']} / {f['audit_duplicated']} / "
        f"{f['audit_lost']} / {f['audit_malformed']}"
    )
    rejected = f"{f['requests_rejected']} / {f['rejected_with_effects']}"
    extra = entry.get("extra") or {}
    assert isinstance(extra, dict)
    notes = ", ".join(f"{key} {value}" for key, value in extra.items())
    command = f"{'FAULT_LONG=1 ' if entry.get('long') else ''}.venv/bin/pytest '{entry['node_id']}'"
    return (
        f"| {entry['scenario']} | {summary(entry)} | {entry['injection']} | "
        f"{f['posts_accepted']} | {emails} | {audit} | {rejected} | {notes} | "
        f"{entry['seconds']} | `{command}` |"
    )


def table(entries: list[dict[str, object]]) -> str:
    header = (
        "| id | scenario | injection | posts 201 | e-mails exp / deliv / dup / lost / dead / "
        "ambig | audit exp / written / dup / lost / torn | rejected / with effects | "
        "other figures | s | reproduce |\n"
        "|---|---|---|---|---|---|---|---|---|---|"
    )
    return "\n".join([header, *(row(e) for e in sorted(entries, key=scenario_key))])


def main(argv: list[str]) -> None:
    latest: dict[str, dict[str, object]] = {}
    for line in Path(argv[1]).read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        latest[entry["node_id"]] = entry
    text = DOCUMENT.read_text(encoding="utf-8")
    before, _, rest = text.partition(START)
    _, _, after = rest.partition(END)
    DOCUMENT.write_text(f"{before}{START}\n{table(list(latest.values()))}\n{END}{after}")


if __name__ == "__main__":
    main(sys.argv)
