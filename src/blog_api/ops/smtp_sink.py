"""A local SMTP sink for development and tests: prints (and optionally records) every e-mail.

    python -m blog_api.ops.smtp_sink --port 8025
    python -m blog_api.ops.smtp_sink --port 8025 --record mails.jsonl --fail-codes 451,451

`--fail-codes` answers the first DATA commands with those codes (4xx: try later, 5xx: refused),
then accepts; `--always CODE` refuses every message. Attempts and deliveries are recorded as
JSON lines, so tests can count them.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from email import message_from_bytes
from email.policy import default as default_policy
from typing import Any

from aiosmtpd.controller import Controller


class SinkHandler:
    def __init__(self, record: str | None, fail_codes: list[int], always: int | None) -> None:
        self.record = record
        self.fail_codes = list(fail_codes)
        self.always = always
        self.lock = threading.Lock()

    def _write(self, entry: dict[str, Any]) -> None:
        if self.record:
            with self.lock, open(self.record, "a", encoding="utf-8") as record_file:
                record_file.write(json.dumps(entry) + "\n")

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content, policy=default_policy)
        entry = {
            "time": time.time(),
            "message_id": message.get("Message-ID"),
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "subject": message.get("Subject"),
            "headers": sorted({key.lower() for key in message}),
        }
        code = self.always or (self.fail_codes.pop(0) if self.fail_codes else None)
        if code:
            self._write({**entry, "event": "refused", "code": code})
            text = "Try again later" if code < 500 else "Mailbox unavailable"
            return f"{code} {text}"
        self._write({**entry, "event": "delivered"})
        body = message.get_body(preferencelist=("plain",))
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
    parser.add_argument("--fail-codes", default="", help="e.g. 451,451: refuse the first DATAs")
    parser.add_argument("--always", type=int, default=None, help="refuse every DATA with CODE")
    args = parser.parse_args(argv)
    codes = [int(code) for code in args.fail_codes.split(",") if code.strip()]
    controller = Controller(
        SinkHandler(args.record, codes, args.always), hostname=args.host, port=args.port
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
