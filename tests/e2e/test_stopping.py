"""`exportd up`, `web` and `worker` stop at every moment, and leave nothing running.

A port that is taken is one line and a quick non-zero exit; SIGINT and SIGTERM
end each command promptly whether it is creating the embedded server, starting
it, migrating, connecting or serving — and the embedded PostgreSQL it started
is stopped again.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.api_helpers import SECRET
from tests.e2e.processes import EXPORTD, free_port, poll_until, wait_until_up, worker_env

pytestmark = pytest.mark.slow

# A stopped command is gone within this long (the embedded server's fast
# shutdown included); the hang this guards against lasted forever.
STOP_SECONDS = 15


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EXPORTD_", "NOTIFY_"))}
    env.update(extra)
    return env


@contextmanager
def held_port() -> Iterator[int]:
    """A loopback port another program listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


def alive(pid: int) -> bool:
    """Running (a zombie nobody reaped has stopped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def postmasters(pgdata: Path) -> list[int]:
    """Live processes started with this data directory (`postgres -D pgdata`)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(pgdata).encode() in argv and alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def assert_nothing_left(pgdata: Path, seen_pids: list[int]) -> None:
    assert not (pgdata / "postmaster.pid").exists()
    assert postmasters(pgdata) == []
    assert not [pid for pid in seen_pids if alive(pid)]


def postmaster_pid(pgdata: Path) -> list[int]:
    """The pid postmaster.pid names, if it is there yet."""
    try:
        first = (pgdata / "postmaster.pid").read_text().split("\n", 1)[0]
    except FileNotFoundError:
        return []
    return [int(first)] if first.strip().isdigit() else []


def stop_and_wait(proc: subprocess.Popen[str], signum: int) -> str:
    """Send `signum`; the process must be gone within STOP_SECONDS. Its output."""
    proc.send_signal(signum)
    try:
        output, _ = proc.communicate(timeout=STOP_SECONDS)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
        raise AssertionError(
            f"still running {STOP_SECONDS} s after {signum!r}:\n{output}"
        ) from None
    return output


def read_until(proc: subprocess.Popen[str], text: str) -> str:
    """Output lines up to the first one containing `text` (pytest's timeout bounds it)."""
    assert proc.stdout is not None
    lines: list[str] = []
    while True:
        line = proc.stdout.readline()
        assert line, "exited before printing " + repr(text) + ":\n" + "".join(lines)
        lines.append(line)
        if text in line:
            return "".join(lines)


# -- a taken port ------------------------------------------------------------


@contextmanager
def exportd(*args: str, env: dict[str, str], cwd: Path) -> Iterator[subprocess.Popen[str]]:
    """An `exportd` process with its output on one pipe, killed if a test left it running."""
    with subprocess.Popen(
        [EXPORTD, *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as proc:
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()


def run_with_port_taken(
    args: list[str], env: dict[str, str], cwd: Path, *, port_variable: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run `exportd ARGS` while another program holds its port: one line naming
    the port, exit 1, within STOP_SECONDS. `{port}` in ARGS is the port."""
    with held_port() as port:
        extra = {"EXPORTD_PORT": str(port)} if port_variable else {}
        started = time.monotonic()
        result = subprocess.run(
            [EXPORTD, *(a.replace("{port}", str(port)) for a in args)],
            env={**env, **extra},
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        elapsed = time.monotonic() - started
    assert result.stderr == f"exportd: cannot listen on 127.0.0.1:{port}: address already in use\n"
    assert result.returncode == 1
    assert elapsed < STOP_SECONDS
    return result


@pytest.mark.parametrize("data_dir", ["new", "existing"])
def test_up_with_its_port_taken_is_one_line_and_leaves_nothing(
    tmp_path: Path, data_dir: str
) -> None:
    data = tmp_path / "data"
    env = clean_env(EXPORTD_DATA_DIR=str(data))
    if data_dir == "existing":
        made = subprocess.run(
            [EXPORTD, "migrate"], env=env, capture_output=True, text=True, timeout=120, check=False
        )
        assert made.returncode == 0, made.stderr
    result = run_with_port_taken(["up"], env, tmp_path, port_variable=True)
    assert result.stdout == ""
    assert_nothing_left(data / "pg", [])
    if data_dir == "new":
        assert not data.exists()  # nothing was created either


def test_web_with_its_port_taken_is_one_line(db_url: str, tmp_path: Path) -> None:
    env = worker_env(db_url, tmp_path / "packages", EXPORTD_JWT_SECRET=SECRET)
    run_with_port_taken(["web", "--host", "127.0.0.1", "--port", "{port}"], env, tmp_path)


# -- signals at every moment of `exportd up` -----------------------------------

UP_MOMENTS = [
    # (what up is doing, the signal, how the test sees it doing that)
    ("creating the embedded server", signal.SIGTERM, "pg directory"),
    ("starting the embedded server", signal.SIGINT, "postmaster.pid"),
    ("starting the embedded server", signal.SIGTERM, "postmaster.pid"),
    ("migrating", signal.SIGTERM, "applied "),
    ("migrating", signal.SIGINT, "applied "),
    ("serving", signal.SIGINT, "Press Ctrl-C"),
    ("serving", signal.SIGTERM, "Press Ctrl-C"),
]


@pytest.mark.parametrize(
    ("moment", "signum", "marker"),
    UP_MOMENTS,
    ids=[f"{m}-{s.name}" for m, s, _ in UP_MOMENTS],
)
def test_up_stops_at_once_at_every_moment(
    tmp_path: Path, moment: str, signum: signal.Signals, marker: str
) -> None:
    data = tmp_path / "data"
    pgdata = data / "pg"
    env = clean_env(EXPORTD_DATA_DIR=str(data), EXPORTD_PORT=str(free_port()))
    seen: list[int] = []
    with exportd("up", env=env, cwd=tmp_path) as proc:
        if marker == "pg directory":
            poll_until(pgdata.exists, "the embedded data directory appearing")
        elif marker == "postmaster.pid":
            poll_until(lambda: bool(postmaster_pid(pgdata)), "postmaster.pid appearing")
            seen = postmaster_pid(pgdata)
        else:
            read_until(proc, marker)
            seen = postmaster_pid(pgdata)
        output = stop_and_wait(proc, signum)
    assert proc.returncode == 0, output
    assert "Traceback" not in output, output
    assert_nothing_left(pgdata, seen)


def test_up_after_an_interrupted_start_starts(tmp_path: Path) -> None:
    """Interrupted while creating its server, `up` leaves a directory the next
    run uses (initdb is never cut half-way)."""
    data = tmp_path / "data"
    env = clean_env(EXPORTD_DATA_DIR=str(data), EXPORTD_PORT=str(free_port()))
    for signum, marker in ((signal.SIGTERM, "pg directory"), (signal.SIGINT, "Press Ctrl-C")):
        with exportd("up", env=env, cwd=tmp_path) as proc:
            if marker == "pg directory":
                poll_until((data / "pg").exists, "the embedded data directory appearing")
            else:
                read_until(proc, marker)
            stop_and_wait(proc, signum)
        assert proc.returncode == 0
    assert_nothing_left(data / "pg", [])


# -- `exportd web` and `exportd worker` on an existing embedded server ---------


@pytest.fixture
def embedded_data(tmp_path: Path) -> Path:
    """A data directory whose embedded server exists (migrated) and is stopped."""
    data = tmp_path / "data"
    made = subprocess.run(
        [EXPORTD, "migrate"],
        env=clean_env(EXPORTD_DATA_DIR=str(data)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    assert not (data / "pg" / "postmaster.pid").exists()
    return data


def embedded_env(data: Path) -> dict[str, str]:
    return clean_env(
        EXPORTD_DATA_DIR=str(data),
        EXPORTD_JWT_SECRET=SECRET,
        EXPORTD_KINDS="tests.kinds_for_tests",
        PYTHONPATH=str(Path(__file__).resolve().parents[2]),
    )


@pytest.mark.parametrize(
    ("command", "signum"), [("web", signal.SIGTERM), ("worker", signal.SIGINT)]
)
def test_web_and_worker_stop_while_the_embedded_server_starts(
    embedded_data: Path, tmp_path: Path, command: str, signum: signal.Signals
) -> None:
    pgdata = embedded_data / "pg"
    args = [command] + (["--port", str(free_port())] if command == "web" else [])
    with exportd(*args, env=embedded_env(embedded_data), cwd=tmp_path) as proc:
        poll_until(lambda: bool(postmaster_pid(pgdata)), "postmaster.pid appearing")
        seen = postmaster_pid(pgdata)
        output = stop_and_wait(proc, signum)
    assert proc.returncode == 0, output
    assert "Traceback" not in output, output
    assert_nothing_left(pgdata, seen)


def test_web_serving_on_the_embedded_server_stops_it_on_sigint(
    embedded_data: Path, tmp_path: Path
) -> None:
    pgdata = embedded_data / "pg"
    port = free_port()
    with exportd("web", "--port", str(port), env=embedded_env(embedded_data), cwd=tmp_path) as proc:
        wait_until_up(f"http://127.0.0.1:{port}/readyz", proc)
        seen = postmaster_pid(pgdata)
        output = stop_and_wait(proc, signal.SIGINT)
    assert proc.returncode == 0, output
    assert seen
    assert_nothing_left(pgdata, seen)


def test_worker_stops_while_connecting(tmp_path: Path) -> None:
    """A database that accepts the TCP connection and never answers: the
    worker is stuck in its connect (timeout 10 s), and SIGTERM ends it at once."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        env = worker_env(f"postgresql://exportd@127.0.0.1:{port}/exportd", tmp_path / "packages")
        with exportd("worker", env=env, cwd=tmp_path) as proc:
            # The worker's connection waits in the backlog: it is connecting.
            readable, _, _ = select.select([silent], [], [], 30)
            assert readable, "the worker never connected"
            started = time.monotonic()
            output = stop_and_wait(proc, signal.SIGTERM)
            elapsed = time.monotonic() - started
    assert proc.returncode == 0, output
    assert "Traceback" not in output, output
    assert elapsed < 5  # not the 10 s connect timeout
