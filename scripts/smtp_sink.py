"""A local SMTP sink for development and tests: prints (and optionally records) every e-mail.

    python scripts/smtp_sink.py --port 8025
    python scripts/smtp_sink.py --port 8025 --record mails.jsonl --fail-codes 451,451

A development tool, not part of the installed package: it needs aiosmtpd, which only the dev
stack's lock (requirements-dev.txt) installs. `make run` starts it (scripts/run-stack.sh); the
tests import its `SinkHandler` (pytest puts scripts/ on sys.path) or start it like `make run`.

`--fail-codes` scripts the answers to the first DATA commands, then the sink accepts: a code
(4xx: try later, 5xx: refused), `stall` (take the message, never answer: the client's timeout
fires) or `drop` (take the message, close the connection instead of answering 250);
`--always CODE|stall|drop` does that to every message. Attempts and deliveries are recorded as
JSON lines (event delivered / refused / stalled / dropped; a delivered message's plain text
too, unless quiet), so tests can count them and read a confirmation e-mail's token.
`--quiet` records without printing (and parses only the headers): the benchmark's stand-in
for a mail server on another machine. Unless quiet, a client that closes its connection with
QUIT is printed too (`--- 127.0.0.1:40312 said QUIT ---`): a worker that stops says it on each
connection it kept.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import threading
import time
from email.parser import BytesParser
from email.policy import default as default_policy
from typing import Any

from aiosmtpd.controller import Controller


def _peer(session: Any) -> str:
    """The client's "address:port"."""
    return ":".join(str(part) for part in session.peer or ())


class SinkHandler:
    def __init__(
        self, record: str | None, fail_codes: list[str], always: str | None, quiet: bool = False
    ) -> None:
        self.record = record
        self.fail_codes = list(fail_codes)
        self.always = always
        self.quiet = quiet
        self.lock = threading.Lock()

    def _write(self, entry: dict[str, Any]) -> None:
        if self.record:
            with self.lock, open(self.record, "a", encoding="utf-8") as record_file:
                record_file.write(json.dumps(entry) + "\n")

    async def handle_QUIT(self, server: Any, session: Any, envelope: Any) -> str:
        # A client that closes its kept connection politely (a worker shutting down) says so.
        if not self.quiet:
            print(f"--- {_peer(session)} said QUIT ---", flush=True)
        return "221 Bye"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        # Quiet: the headers are all that is recorded, and the body is never printed.
        parser = BytesParser(policy=default_policy)
        message = parser.parsebytes(envelope.content, headersonly=self.quiet)
        entry = {
            "time": time.time(),
            "message_id": message.get("Message-ID"),
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "subject": message.get("Subject"),
            "headers": sorted({key.lower() for key in message}),
            # The client's address and port: messages sent on one connection share it.
            "peer": _peer(session),
        }
        action = self.always or (self.fail_codes.pop(0) if self.fail_codes else None)
        if action == "stall":
            self._write({**entry, "event": "stalled"})
            await asyncio.sleep(3600)  # never answer; the client's socket timeout ends it
        if action == "drop":
            self._write({**entry, "event": "dropped"})
            server.transport.abort()
            return "421 Connection dropped"  # never reaches the client
        if action:
            code = int(action)
            self._write({**entry, "event": "refused", "code": code})
            text = "Try again later" if code < 500 else "Mailbox unavailable"
            return f"{code} {text}"
        if self.quiet:
            self._write({**entry, "event": "delivered"})
            return "250 Message accepted for delivery"
        body = message.get_body(preferencelist=("plain",))
        # The text too: a confirmation e-mail's token is read from here in tests.
        self._write({**entry, "event": "delivered", "text": body.get_content() if body else ""})
        print(
            f"--- e-mail to {', '.join(envelope.rcpt_tos)} ---\n"
            f"Message-ID: {entry['message_id']}\nSubject: {entry['subject']}\n\n"
            f"{body.get_content() if body else ''}--- end ---",
            flush=True,
        )
        return "250 Message accepted for delivery"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8025)
    parser.add_argument("--record", default=None, help="append a JSON line per attempt here")
    parser.add_argument(
        "--fail-codes", default="", help="e.g. 451,stall,drop: script the first DATAs"
    )
    parser.add_argument("--always", default=None, help="CODE, stall or drop on every DATA")
    parser.add_argument("--quiet", action="store_true", help="record only; print no e-mail")
    args = parser.parse_args(argv)
    codes = [code.strip() for code in args.fail_codes.split(",") if code.strip()]
    for action in [*codes, args.always or "250"]:
        if action not in ("stall", "drop") and not action.isdigit():
            parser.error(f"not a code, stall or drop: {action!r}")
    controller = Controller(
        SinkHandler(args.record, codes, args.always, args.quiet),
        hostname=args.host,
        port=args.port,
    )
    controller.start()
    print(f"SMTP sink listening on {args.host}:{args.port}", flush=True)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    controller.stop()
    sys.exit(0)


if __name__ == "__main__":
    main()
