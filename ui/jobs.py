"""Long ops jobs (training, promotion) run from the web app as background `supportbot` processes.

A separate process keeps the app serving while a model trains (its own interpreter, no shared lock, at a
lower CPU priority) and runs exactly what the command line runs. Each job has a folder under
`home/jobs/<id>/` with its command, its stderr log (progress lines), its JSON result and exit code, so
the ops console shows jobs across restarts of the app.

On a shared PostgreSQL database one job runs at a time across all replicas: the job's process holds a session
lock of the database while it runs (`exclusive_job`; the server frees it if the process dies), and a job
started meanwhile, on any replica or from a terminal, is refused with the name of the one running.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa

from chatbot.versions import write_json
from retrieval.database import Database

from .progress import LINE_PREFIX


class JobError(ValueError):
    """A job refused (another one running, unknown job); one line."""


# The commands the ops console runs as jobs; on PostgreSQL they hold the job lock while they run.
JOB_COMMANDS = {"kb add", "kb sync", "learn", "train", "models promote"}
_JOB_LOCK = 0x5B07_10B5  # the advisory lock's key
_JOB_LEASE = "job-running"  # the `leases` row that says which job holds it


@contextmanager
def exclusive_job(db: Database, title: str) -> Iterator[None]:
    """Hold the job lock of the shared database while the body runs (PostgreSQL; a SQLite home serves one machine,
    where `Jobs.start` keeps to one job); raises JobError when another process holds it."""
    if db.dialect != "postgresql":
        yield
        return
    with db.engine.connect() as connection:  # its own session: the lock lives exactly as long as it
        if not connection.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": _JOB_LOCK}).scalar_one():
            raise JobError(f"a job is already running ({_holder(db)}); wait for it to finish")
        connection.commit()
        db.upsert("leases", "name", name=_JOB_LEASE, holder=f"{title} on {socket.gethostname()} (pid {os.getpid()})",
                  taken_at=datetime.now().isoformat(timespec="seconds"))
        try:
            yield
        finally:
            db.execute("DELETE FROM leases WHERE name = :name", name=_JOB_LEASE)
            connection.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _JOB_LOCK})
            connection.commit()


def running_elsewhere(db: Database) -> str | None:
    """Which job holds the shared job lock now (PostgreSQL), else None. Read from the server's lock table, without
    taking the lock even for a moment (a job starting then would be refused)."""
    if db.dialect != "postgresql":
        return None
    held = db.tuples("SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = 0 AND objid = :k"
                     " AND objsubid = 1 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                     k=_JOB_LOCK)
    return _holder(db) if held else None


def _holder(db: Database) -> str:
    rows = db.tuples("SELECT holder FROM leases WHERE name = :name", name=_JOB_LEASE)
    return rows[0][0] if rows else "starting"


@dataclass
class Job:
    id: str
    title: str
    command: list[str]
    started: str
    pid: int = 0
    status: str = "running"  # running, done or failed
    stage: str = ""
    done: int = 0
    total: int = 0
    last_line: str = ""
    result: dict = field(default_factory=dict)
    error: str = ""

    def to_json(self) -> dict:
        return asdict(self)


class Jobs:
    def __init__(self, home: Path, db: Database):
        self.home = home
        self.root = home / "jobs"
        self.db = db

    def start(self, title: str, args: list[str]) -> Job:
        """Run `supportbot ARGS --json` in the background; one job at a time (both would share 2 cores; on a
        shared PostgreSQL database, one across all replicas)."""
        running = [j for j in self.list() if j.status == "running"]
        if running:
            raise JobError(f"job {running[0].id} ({running[0].title}) is still running; wait for it to finish")
        elsewhere = running_elsewhere(self.db)
        if elsewhere:
            raise JobError(f"a job is already running ({elsewhere}); wait for it to finish")
        job_id = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        folder = self.root / job_id
        folder.mkdir(parents=True, exist_ok=False)
        command = [sys.executable, "-m", "ui.cli", *args, "--home", str(self.home), "--json"]
        job = Job(job_id, title, command, time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()))
        script = f"nice -n 10 {shlex.join(command)} > result.json 2> log.txt; echo $? > rc"
        process = subprocess.Popen(["sh", "-c", script], cwd=folder, start_new_session=True,
                                   stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        job.pid = process.pid
        write_json(folder / "job.json", job.to_json())
        return job

    def get(self, job_id: str) -> Job:
        folder = self.root / job_id
        if not (folder / "job.json").exists():
            raise JobError(f"no job {job_id!r}")
        job = Job(**json.loads((folder / "job.json").read_text(encoding="utf-8")))
        log = (folder / "log.txt").read_text(encoding="utf-8", errors="replace").splitlines() if (folder / "log.txt").exists() else []
        for line in reversed(log):
            if line.startswith(LINE_PREFIX):
                stage, _, counts = line[len(LINE_PREFIX):].rpartition(" ")
                job.stage, (job.done, job.total) = stage, map(int, counts.split("/"))
                break
        job.last_line = next((line for line in reversed(log) if line.strip() and not line.startswith(LINE_PREFIX)), "")
        if (folder / "rc").exists():
            rc = (folder / "rc").read_text().strip()
            job.status = "done" if rc == "0" else "failed"
            text = (folder / "result.json").read_text(encoding="utf-8").strip() if (folder / "result.json").exists() else ""
            try:
                job.result = json.loads(text) if text else {}
            except json.JSONDecodeError:
                job.result = {}
            if job.status == "failed":
                job.error = job.last_line or f"exit status {rc}"
        elif not _alive(job.pid):
            job.status, job.error = "failed", "interrupted (the process ended without finishing)"
        return job

    def list(self, limit: int = 20) -> list[Job]:
        """Newest first."""
        if not self.root.exists():
            return []
        ids = sorted((p.name for p in self.root.iterdir() if (p / "job.json").exists()), reverse=True)[:limit]
        return [self.get(i) for i in ids]


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A finished child of this process stays a zombie until reaped: reap it, if it is ours.
    try:
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True
