"""A throw-away PostgreSQL cluster for tests: initdb in a temporary folder, loopback only, stopped and removed at
the end.

The server binaries are Debian's `postgresql` package (`make test` installs it). PostgreSQL refuses to run as
root, so under root the cluster belongs to the `postgres` user the package creates (and lives outside pytest's
temporary folders, which only root may enter).
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg


def server_bin() -> Path | None:
    """The folder of initdb and pg_ctl: the newest Debian install, else whatever is on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self, bin_dir: Path):
        self.root, self.bin = Path(tempfile.mkdtemp(prefix="supportbot-postgres-")), bin_dir
        self.data = self.root / "data"
        self.port = _free_port()
        self._names = itertools.count(1)
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as:
            account = pwd.getpwnam("postgres")
            os.chown(self.root, account.pw_uid, account.pw_gid)

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as, *args], check=True, capture_output=True, cwd=self.root)

    def start(self) -> Cluster:
        """Make the cluster the first time, then (re)start its server."""
        if not self.data.exists():
            self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "supportbot", "--auth=trust", "-E", "UTF8", "--no-sync")
        # fsync off: nothing survives a crash of the machine, which a test never is; but each commit is written
        # (synchronous_commit stays on), so what was acknowledged survives the server being killed (`stop`).
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off"
                   " -c full_page_writes=off -c max_connections=200")
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.root / "server.log"), "-w", "start")
        return self

    def stop(self) -> None:
        """Kill the server at once, as a crash would (clients' connections are cut); its data stays for `start`."""
        subprocess.run([*self._as, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"],
                       capture_output=True, cwd=self.root)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://supportbot@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database on the cluster; its URL."""
        name = f"test_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        return self.url(name)
