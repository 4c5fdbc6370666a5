"""A real PostgreSQL server for the tests (loaded with ``pytest_plugins = ["pg_server"]``).

Debian's ``postgresql`` package (``make system-deps`` installs it) provides ``initdb`` and
``postgres`` under ``/usr/lib/postgresql/<version>/bin``. :class:`PostgresServer` runs them the
way a department server is run, only smaller:

* ``initdb`` into a fresh temporary folder, as an unprivileged user -- PostgreSQL refuses to run
  as root, and CI runs as root: then the ``postgres`` system user (made by the Debian package)
  or ``nobody`` owns the folder and the processes (``subprocess`` ``user=``/``group=``);
* password authentication (scram-sha-256) for the user ``mame``, so that the tests can check
  that the password never reaches ``study.toml``, messages or logs;
* listening on 127.0.0.1 only, on a free port, with its Unix socket inside the folder;
* stopped (fast shutdown, then kill) and its folder removed at the end of the session.

Fixtures: ``pg_server`` (session), ``pg_url`` (a fresh empty database per test) and
``db_url`` (parametrised ``sqlite`` / ``postgresql``: None for the study's own SQLite file, or
a fresh PostgreSQL URL). Without PostgreSQL or psycopg the PostgreSQL cases skip -- except
under ``CI=1``, where they fail.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

PG_USER = "mame"
PG_PASSWORD = "s3cret-Pw_for-tests"  # checked for in outputs: it must never appear


def find_pg_bin() -> Path | None:
    """The folder holding ``initdb`` and ``postgres`` ($MAME_EVAL_PG_BIN, Debian, or PATH)."""
    env = os.environ.get("MAME_EVAL_PG_BIN")
    candidates = [env] if env else []
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                         key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit()
                         else 0, reverse=True)
    which = shutil.which("initdb")
    if which:
        candidates.append(str(Path(which).parent))
    for c in candidates:
        if c and (Path(c) / "initdb").is_file() and (Path(c) / "postgres").is_file():
            return Path(c)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_as() -> dict:
    """subprocess keyword arguments that drop root to an unprivileged user (none if not root)."""
    if os.geteuid() != 0:
        return {}
    for name in ("postgres", "nobody"):
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            continue
        return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' user exists")


@dataclass
class PostgresServer:
    """One running PostgreSQL server (see the module docstring)."""

    bin_dir: Path
    root: Path
    port: int
    proc: subprocess.Popen | None = None

    host = "127.0.0.1"
    user = PG_USER
    password = PG_PASSWORD

    @classmethod
    def start(cls, bin_dir: Path | None = None, timeout: float = 60.0,
              fsync: bool = False) -> PostgresServer:
        """initdb + postgres (see the module docstring). ``fsync=False`` (tests) trades
        durability on power loss for speed; a benchmark passes True, like a real server."""
        bin_dir = bin_dir or find_pg_bin()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL not found (apt-get install postgresql, or set "
                               "$MAME_EVAL_PG_BIN)")
        root = Path(tempfile.mkdtemp(prefix="mame-pg-"))
        os.chmod(root, 0o755)
        server = cls(bin_dir=bin_dir, root=root, port=_free_port())
        drop = _run_as()
        data, sock = root / "data", root / "sock"
        sock.mkdir()
        pwfile = root / "pwfile"
        pwfile.write_text(PG_PASSWORD + "\n")
        if drop:
            for p in (root, sock, pwfile):
                os.chown(p, drop["user"], drop["group"])
        try:
            subprocess.run([str(bin_dir / "initdb"), "-D", str(data), "-U", PG_USER,
                            f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8",
                            "--locale=C.UTF-8", "--no-sync"],
                           check=True, capture_output=True, cwd=root, **drop)
            pwfile.unlink()
            log = open(root / "server.log", "ab")  # noqa: SIM115 - handed to the server
            server.proc = subprocess.Popen(
                [str(bin_dir / "postgres"), "-D", str(data), "-p", str(server.port),
                 "-h", server.host, "-k", str(sock), "-c", f"fsync={'on' if fsync else 'off'}",
                 "-c", "max_connections=200", "-c", "shared_buffers=32MB"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=root,
                **drop)
            log.close()
            server._wait(timeout)
        except BaseException as exc:
            detail = getattr(exc, "stderr", b"") or b""
            server.stop()
            if isinstance(exc, subprocess.CalledProcessError):
                raise RuntimeError(f"initdb failed: {detail.decode(errors='replace')}") from None
            raise
        return server

    def _wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError("postgres exited at start: " + self.log_tail())
            try:
                with socket.create_connection((self.host, self.port), timeout=1):
                    pass
                import psycopg

                with psycopg.connect(self.dsn("postgres"), connect_timeout=3):
                    return
            except (OSError, Exception):  # noqa: BLE001 - not up yet
                time.sleep(0.2)
        raise RuntimeError(f"postgres did not start within {timeout:.0f} s: " + self.log_tail())

    def log_tail(self) -> str:
        try:
            return (self.root / "server.log").read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def dsn(self, database: str) -> str:
        return (f"host={self.host} port={self.port} user={PG_USER} password={PG_PASSWORD} "
                f"dbname={database}")

    def url(self, database: str) -> str:
        """SQLAlchemy URL of ``database`` (password included)."""
        return (f"postgresql+psycopg://{PG_USER}:{PG_PASSWORD}@{self.host}:{self.port}/"
                f"{database}")

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # "fast" shutdown
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def _missing_reason() -> str | None:
    if find_pg_bin() is None:
        return "PostgreSQL server binaries not found (apt-get install postgresql)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg not installed (pip install 'mame-eval[postgres]')"
    return None


@pytest.fixture(scope="session")
def pg_server():
    """A PostgreSQL server for the whole test session (skips, or fails under CI=1)."""
    why = _missing_reason()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs PostgreSQL for these tests: {why}")
        pytest.skip(why)
    server = PostgresServer.start()
    yield server
    server.stop()


_DB_COUNTER = itertools.count()


@pytest.fixture()
def pg_url(pg_server) -> str:
    """URL of a fresh, empty PostgreSQL database."""
    return pg_server.create_database(f"t{os.getpid()}_{next(_DB_COUNTER)}")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request) -> str | None:
    """None (the study's own ``study.db``) or the URL of a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("pg_url")
