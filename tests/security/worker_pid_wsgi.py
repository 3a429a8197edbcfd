"""The app as gunicorn serves it, for S5: every response names the worker process that served
it (`X-Worker-Pid`), and each worker prints a line once its app is built, so a test can wait for
both workers and see that both took part.

Rate-limit keys get the prefix in `SECURITY_LIMIT_PREFIX`, so concurrent runs sharing a Redis
database never count each other's attempts.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from typing import Any

from blog_api import create_app

flask_app = create_app(RATELIMIT_KEY_PREFIX=os.environ["SECURITY_LIMIT_PREFIX"])
print(f"app ready in worker {os.getpid()}", file=sys.stderr, flush=True)


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        return start_response(status, [*headers, ("X-Worker-Pid", str(os.getpid()))], exc_info)

    return flask_app(environ, start)
