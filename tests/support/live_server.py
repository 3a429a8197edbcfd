"""A live HTTP side for a `Stack`: gunicorn serving the app, loopback HTTP helpers and the
admin CLI, for the tests that talk to the API the way a browser, Postman or an operator does.

Everything started here is a `Service` of the stack's launcher, so `Stack.close` stops it (by
PID, process group included) and its log is attached to a failing test's report; waiting for an
answer is `Service.wait_for_http`.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from harness.launcher import BIN, Service, free_port
from support.integration_stack import Stack

# Loopback requests never go through a proxy that the calling shell may have configured.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class LiveServer:
    service: Service
    url: str  # http://127.0.0.1:<port>, no trailing slash

    def log_sections(self) -> list[tuple[str, str]]:
        """The server's log, attached to a failing test's report by the root conftest."""
        return [(f"{self.service.name} {self.url}", self.service.log()[-20_000:])]


def http_request(
    method: str,
    url: str,
    body: object = None,
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
) -> tuple[int, bytes]:
    """One request to a loopback `url` (`body` sent as JSON): its status and body; status 0
    while nothing answers."""
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError(f"not a loopback URL: {url}")
    headers = dict(headers or {})
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(  # noqa: S310 (loopback http only, checked above)
        url, data=data, headers=headers, method=method
    )
    try:
        with _DIRECT.open(request, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as error:
        return error.code, bytes(error.read())
    except OSError:
        return 0, b""


def http_get(
    url: str, headers: dict[str, str] | None = None, timeout: float = 5.0
) -> tuple[int, bytes]:
    return http_request("GET", url, None, headers, timeout)


def http_status(url: str, headers: dict[str, str] | None = None, timeout: float = 2.0) -> int:
    return http_get(url, headers, timeout)[0]


def basic_auth(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return {"Authorization": f"Basic {token}"}


def start_gunicorn(
    stack: Stack, *, workers: int = 2, wait: bool = True, timeout: float = 60.0
) -> LiveServer:
    """gunicorn serving `blog_api.wsgi:flask_app` with the stack's settings on a free port;
    returns once `/health` answers 200 (`wait`; else call `wait_until_serving`)."""
    port = free_port()
    service = stack.launcher.start_gunicorn(
        "gunicorn",
        "blog_api.wsgi:flask_app",
        *("--no-control-socket", "--workers", str(workers), "--bind", f"127.0.0.1:{port}"),
        *("--access-logfile", "-"),
        env=stack.env(),
    )
    server = LiveServer(service, f"http://127.0.0.1:{port}")
    if wait:
        wait_until_serving(server, timeout)
    return server


def wait_until_serving(server: LiveServer, timeout: float = 60.0) -> None:
    server.service.wait_for_http(f"{server.url}/health", timeout=timeout)


def create_admin(stack: Stack, username: str, password: str, email: str) -> str:
    """Create an admin with the operator's command, `flask users create-admin`; returns its
    output."""
    result = stack.run(
        [
            *(str(BIN / "flask"), "--app", "blog_api", "users", "create-admin"),
            *("--username", username, "--email", email),
        ],
        timeout=60,
        env=stack.env(ADMIN_PASSWORD=password),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def node_tool(name: str) -> Path:
    """An npm-installed command of tests/postman (installed by `make test` with `npm ci`)."""
    return Path(__file__).resolve().parents[1] / "postman" / "node_modules" / ".bin" / name


def without_proxy(environ: dict[str, str]) -> dict[str, str]:
    """Loopback traffic must never go through a proxy a developer's shell may set."""
    drop = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
    return {k: v for k, v in environ.items() if k.lower() not in drop} | {"NO_PROXY": "*"}
