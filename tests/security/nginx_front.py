"""Debian's nginx in front of gunicorn, run from the shipped `deploy/nginx.conf`, and plain
HTTP/1.1 requests that the tests need to shape themselves (repeated headers, header names with
underscores, a chosen source address on the loopback network).

nginx runs as a `Service` of the stack (stopped by its PID with the rest), unprivileged-port, in
the foreground, with its own prefix, temporary directories and access log in the stack's
directory. The configuration is the shipped file with only its listen port, upstream port and
Debian paths replaced, so a change to the file is what the tests see.
"""

from __future__ import annotations

import http.client
import os
import pwd
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from harness.launcher import free_port
from support import require_service
from support.integration_stack import Stack

NGINX = Path("/usr/sbin/nginx")
SHIPPED_CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "nginx.conf"


@dataclass(frozen=True)
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes
    elapsed: float


def send(
    port: int,
    method: str,
    path: str,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes | None = None,
    source: str = "127.0.0.1",
    timeout: float = 10.0,
) -> Answer:
    """One request on a connection of its own from `source`, with exactly `headers` (repeats
    kept, in order; `Host` only if given). A server that refuses a body from its length alone
    may close the connection while the body is still being written: its answer is read anyway."""
    connection = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=timeout, source_address=(source, 0)
    )
    started = time.perf_counter()
    try:
        connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for name, value in headers:
            connection.putheader(name, value)
        if body is not None:
            connection.putheader("Content-Length", str(len(body)))
        with suppress(BrokenPipeError, ConnectionResetError):
            connection.endheaders(body)
        response = connection.getresponse()
        content = response.read()
        return Answer(response.status, response.headers, content, time.perf_counter() - started)
    finally:
        connection.close()


def render_config(directory: Path, listen_port: int, upstream_port: int) -> str:
    """deploy/nginx.conf with its ports and Debian paths pointed at this test's."""
    text = SHIPPED_CONFIG.read_text(encoding="utf-8")
    replacements = {
        "listen 80 ": f"listen 127.0.0.1:{listen_port} ",
        "server 127.0.0.1:8000 ": f"server 127.0.0.1:{upstream_port} ",
        # nginx's own errors go to its output, attached to a failing test's report.
        "/var/log/nginx/error.log": "stderr",
        "/var/log/nginx/": f"{directory}/",
        "/var/lib/nginx/": f"{directory}/",
    }
    for old, new in replacements.items():
        assert old in text, f"deploy/nginx.conf no longer contains {old!r}: update the test"
        text = text.replace(old, new)
    return text


def require_nginx() -> None:
    """Skip without Debian's nginx (`make test-tools` installs it as root); fail under CI."""
    if not os.access(NGINX, os.X_OK):
        missing = FileNotFoundError(f"{NGINX}; run `make test-tools` as root")
        require_service("nginx (Debian package nginx)", missing)


def start_nginx(stack: Stack, upstream_port: int) -> int:
    """nginx with the shipped configuration in front of 127.0.0.1:`upstream_port`; its port,
    once it answers `/health` through to the upstream."""
    require_nginx()
    directory = stack.tmp_path / "nginx"
    directory.mkdir()
    port = free_port()
    config = directory / "nginx.conf"
    config.write_text(render_config(directory, port, upstream_port), encoding="utf-8")
    main = f"daemon off; pid {directory / 'nginx.pid'};"
    if os.geteuid() == 0:
        # As root nginx would run its workers as nobody, who cannot enter this test's
        # directory (pytest makes it private); the configuration names no user on purpose.
        main += f" user {pwd.getpwuid(0).pw_name};"
    arguments = [str(NGINX), "-p", str(directory), "-c", str(config), "-g", main]
    service = stack.start("nginx", arguments)

    def answers() -> bool:
        try:
            return send(port, "GET", "/health", [("Host", "localhost")], timeout=2).status == 200
        except OSError:
            return False

    service.wait_for(answers, 30, "nginx to answer /health through to gunicorn")
    return port
