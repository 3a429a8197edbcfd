"""Compile and check the lock files: each requirement list (`*.in`, version ranges) is locked in
a `*.txt` of exact versions with the SHA-256 of every file PyPI has for them.

    python scripts/locks.py check                # `make test`: a stale lock fails, naming the fix
    python scripts/locks.py compile [--upgrade]  # `make lock`: recompile every lock with uv

The four locks are layered: runtime (`requirements`), the dev stack `make run` adds
(`requirements-dev`), OpenTelemetry tracing, which production adds to trace
(`requirements-tracing`), the tests (`requirements-test`, on all three). Each `.in` constrains
itself with `-c` on the locks it is installed with, so a package shared by two locks has one
version and pip can install them together with `--require-hashes`. uv resolves for every
platform and Python version the project supports at once (`--universal`): the lines that only
some need carry environment markers.

A lock records the SHA-256 of what it was compiled from (its `.in` and the locks that `.in`
names) in its header. `check` recomputes it with nothing but the standard library, offline and
in milliseconds: a lock whose inputs changed without `make lock` is stale.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# In install order: each builds on the ones before it.
LOCKS = ("requirements", "requirements-dev", "requirements-tracing", "requirements-test")
DIGEST_LINE = "# inputs-sha256: {digest} (see scripts/locks.py)"
DIGEST = re.compile(r"^# inputs-sha256: ([0-9a-f]{64})\b", re.MULTILINE)
INCLUDED = re.compile(r"^\s*-[cr]\s+(\S+)", re.MULTILINE)


def inputs_digest(source: Path) -> str:
    """SHA-256 of the `.in` file and of every file it includes or is constrained by (read as
    text: a checkout with CRLF line ends has the same digest)."""
    text = source.read_text(encoding="utf-8")
    digest = hashlib.sha256(text.encode())
    for name in INCLUDED.findall(text):
        digest.update(b"\0" + name.encode() + b"\0")
        digest.update((source.parent / name).read_text(encoding="utf-8").encode())
    return digest.hexdigest()


def stale_locks(root: Path) -> list[str]:
    """The locks that are missing or were compiled from other inputs than today's."""
    stale = []
    for name in LOCKS:
        lock = root / f"{name}.txt"
        recorded = DIGEST.search(lock.read_text(encoding="utf-8")) if lock.exists() else None
        if recorded is None or recorded.group(1) != inputs_digest(root / f"{name}.in"):
            stale.append(lock.name)
    return stale


def minimum_python(root: Path) -> str:
    """The lowest Python version `requires-python` in pyproject.toml allows, e.g. "3.11"."""
    with open(root / "pyproject.toml", "rb") as pyproject:
        requires = tomllib.load(pyproject)["project"]["requires-python"]
    match = re.fullmatch(r">=\s*(\d+\.\d+)", requires.split(",")[0].strip())
    if match is None:
        raise SystemExit(f"requires-python should start with >=X.Y, not {requires!r}")
    return match.group(1)


def compile_locks(root: Path, uv: str, upgrade: bool) -> None:
    """Recompile every lock in order (uv keeps the versions already locked unless `upgrade`)."""
    for name in LOCKS:
        lock = root / f"{name}.txt"
        command = [
            *(uv, "pip", "compile", f"{name}.in", "--output-file", lock.name, "--quiet"),
            *("--universal", "--python-version", minimum_python(root), "--generate-hashes"),
            *("--custom-compile-command", "make lock"),
            # PyPI only, whatever indexes this machine's pip or uv is configured with: the
            # hashes must be those of the files every other machine downloads.
            *("--index-url", "https://pypi.org/simple", "--no-config"),
        ]
        if upgrade:
            command.append("--upgrade")
        subprocess.run(command, cwd=root, check=True)  # noqa: S603 (uv with our arguments)
        header, _, body = lock.read_text(encoding="utf-8").partition("\n#    make lock\n")
        digest = DIGEST_LINE.format(digest=inputs_digest(root / f"{name}.in"))
        lock.write_text(f"{header}\n#    make lock\n{digest}\n{body}", encoding="utf-8")
        print(f"{lock.name}: {sum(1 for _ in re.finditer(r'^[a-z0-9]', body, re.M))} packages")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check", help="exit 1 with one line if a lock is stale")
    compile_parser = commands.add_parser("compile", help="recompile the locks with uv")
    compile_parser.add_argument("--uv", default="uv", help="the uv executable")
    compile_parser.add_argument(
        "--upgrade", action="store_true", help="move every package to its newest allowed version"
    )
    args = parser.parse_args(argv)
    if args.command == "compile":
        compile_locks(ROOT, args.uv, args.upgrade)
        return 0
    stale = stale_locks(ROOT)
    if stale:
        print(
            f"Stale lock file(s) {', '.join(stale)}: a requirements*.in changed since they were "
            "compiled; run `make lock` and commit the lock files.",
            file=sys.stderr,
        )
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
