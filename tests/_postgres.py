"""A throwaway PostgreSQL server for the tests: found or installed, started, stopped.

The project rule is that tests needing a real server bring it up themselves, so
``make test`` passes on a fresh machine. :func:`postgres_dsn` (session-scoped) yields
a libpq DSN for a superuser:

1. ``IAMSCOPE_TEST_POSTGRES_DSN``, when set, wins: nothing is started.
2. Otherwise the server binaries are looked up (``/usr/lib/postgresql/<v>/bin``, the
   newest version first, then ``PATH``). When absent they are installed with
   ``apt-get install -y postgresql`` if we are root; without root the tests skip
   with the reason.
3. ``initdb`` makes a cluster in a fresh temporary directory (trust auth, UTF-8,
   ``C`` locale, no fsync) and ``postgres`` serves it on ``127.0.0.1`` at a free port,
   with no Unix socket. PostgreSQL refuses to run as root, so as root both run as an
   unprivileged system user (``iamscope-pg``, created when missing) that owns the
   directory.
4. At session end (or when start-up fails) the server is stopped by its pid — fast
   shutdown, then SIGKILL if it lingers — and the directory is removed.

With the binaries present, start-up takes one to two seconds.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

__all__ = ["PostgresServer", "find_bindir", "postgres_dsn", "start_postgres"]

ENV_DSN = "IAMSCOPE_TEST_POSTGRES_DSN"
SERVICE_USER = "iamscope-pg"
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


class PostgresUnavailable(Exception):
    """The server could not be had here, for a reason worth a skip rather than a failure."""


def _version_key(bindir: str) -> tuple[int, ...]:
    match = re.search(r"/postgresql/([0-9.]+)/bin$", bindir)
    return tuple(int(p) for p in match.group(1).split(".")) if match else ()


def find_bindir() -> Path | None:
    """The directory holding ``initdb``, ``postgres`` and ``pg_isready``, newest first."""
    candidates = sorted(
        (os.path.dirname(p) for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")),
        key=_version_key,
        reverse=True,
    )
    found = shutil.which("initdb")
    if found:
        candidates.append(os.path.dirname(os.path.realpath(found)))
    for bindir in candidates:
        if all(os.access(os.path.join(bindir, b), os.X_OK) for b in ("initdb", "postgres")):
            return Path(bindir)
    return None


def _run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)


def apt_install(package: str) -> subprocess.CompletedProcess[str]:
    """``apt-get install -y package`` (after ``apt-get update`` if the first try fails).
    The caller checks that we are root and that apt-get exists."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", package]
    done = _run(install, env=env)
    if done.returncode != 0:
        # A fresh machine has no package lists yet; refreshing them is the usual cure.
        _run(["apt-get", "update", "-q"], env=env)
        done = _run(install, env=env)
    return done


def install_postgres() -> Path:
    """Install the server binaries with apt-get (root only)."""
    if os.geteuid() != 0:
        raise PostgresUnavailable(
            "PostgreSQL server binaries not found and not root, so they cannot be installed"
            " (install the 'postgresql' package or set IAMSCOPE_TEST_POSTGRES_DSN)"
        )
    if shutil.which("apt-get") is None:
        raise PostgresUnavailable("PostgreSQL server binaries not found and no apt-get here")
    done = apt_install("postgresql")
    bindir = find_bindir()
    if done.returncode != 0 or bindir is None:
        raise RuntimeError(
            f"apt-get install postgresql failed (exit {done.returncode}):\n"
            f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        )
    return bindir


def _service_account() -> tuple[int, int] | None:
    """(uid, gid) to run the server as: None when we are not root (run as ourselves)."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        made = _run(
            ["useradd", "--system", "--user-group", "--no-create-home",
             "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", SERVICE_USER]
        )  # fmt: skip
        # Exit 9: another test run created it meanwhile, which is just as good.
        if made.returncode not in (0, 9):
            raise RuntimeError(f"useradd {SERVICE_USER} failed: {made.stderr.strip()}") from None
        entry = pwd.getpwnam(SERVICE_USER)
    return entry.pw_uid, entry.pw_gid


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PostgresServer:
    """A running server: its DSN, and how to stop it."""

    process: subprocess.Popen[bytes]
    directory: Path
    port: int

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    @property
    def log(self) -> str:
        try:
            return (self.directory / "server.log").read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Fast shutdown by pid (SIGINT), SIGKILL if it lingers; then remove the files."""
        try:
            if self.process.poll() is None:
                os.kill(self.process.pid, signal.SIGINT)
                try:
                    self.process.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    os.kill(self.process.pid, signal.SIGKILL)
                    self.process.wait(STOP_TIMEOUT)
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


def start_postgres(bindir: Path) -> PostgresServer:
    """initdb a fresh cluster in a temp dir and serve it on 127.0.0.1; wait until ready."""
    account = _service_account()
    as_user: dict[str, Any] = {}
    if account is not None:
        uid, gid = account
        as_user = {"user": uid, "group": gid, "extra_groups": []}
    directory = Path(tempfile.mkdtemp(prefix="iamscope-pg-"))
    data = directory / "data"
    if account is not None:
        os.chown(directory, *account)
    # A minimal environment: PG* variables of the caller must not steer initdb or postgres.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"}
    try:
        init = _run(
            [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
             "--encoding=UTF8", "--locale=C", "--no-sync"],
            env=env, cwd=directory, **as_user,
        )  # fmt: skip
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed (exit {init.returncode}):\n{init.stderr}")
        return _serve(bindir, directory, data, env, as_user)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise


def _serve(
    bindir: Path, directory: Path, data: Path, env: dict[str, str], as_user: dict[str, Any]
) -> PostgresServer:
    last_error = ""
    for _ in range(3):  # a free port can be taken by someone else before we bind it
        port = _free_port()
        log = open(directory / "server.log", "ab")  # noqa: SIM115 - the child keeps it open
        try:
            process = subprocess.Popen(
                [str(bindir / "postgres"), "-D", str(data), "-p", str(port),
                 "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
                 "-c", "fsync=off", "-c", "synchronous_commit=off",
                 "-c", "full_page_writes=off", "-c", "max_connections=40"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, cwd=directory, **as_user,
            )  # fmt: skip
        finally:
            log.close()
        server = PostgresServer(process, directory, port)
        if _wait_ready(bindir, server, env):
            return server
        last_error = server.log
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(STOP_TIMEOUT)
        if "could not bind" not in last_error and "in use" not in last_error:
            break
    raise RuntimeError(f"PostgreSQL did not become ready; its log:\n{last_error}")


def _wait_ready(bindir: Path, server: PostgresServer, env: dict[str, str]) -> bool:
    isready = bindir / "pg_isready"
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return False
        if isready.exists():
            probe = _run(
                [str(isready), "-q", "-h", "127.0.0.1", "-p", str(server.port), "-t", "2"],
                env=env,
            )
            if probe.returncode == 0:
                return True
        else:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", server.port), timeout=1),
            ):
                # Accepting TCP is not accepting queries; give start-up a moment to finish.
                time.sleep(0.5)
                return server.process.poll() is None
        time.sleep(0.05)
    return False


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """A superuser DSN: ``IAMSCOPE_TEST_POSTGRES_DSN`` or a server started for this session."""
    dsn = os.environ.get(ENV_DSN)
    if dsn:
        yield dsn
        return
    try:
        bindir = find_bindir() or install_postgres()
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))
    server = start_postgres(bindir)
    try:
        yield server.dsn
    finally:
        server.stop()
