"""Long ops jobs (training, promotion) run from the web app as background `supportbot` processes.

A separate process keeps the app serving while a model trains (its own interpreter, no shared lock, at a
lower CPU priority) and runs exactly what the command line runs. Each job has a folder under
`home/jobs/<id>/` with its command, its stderr log (progress lines), its JSON result and exit code, so
the ops console shows jobs across restarts of the app.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from chatbot.versions import write_json

from .progress import LINE_PREFIX


class JobError(ValueError):
    """A job refused (another one running, unknown job); one line."""


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
    def __init__(self, home: Path):
        self.home = home
        self.root = home / "jobs"

    def start(self, title: str, args: list[str]) -> Job:
        """Run `supportbot ARGS --json` in the background; one job at a time (both would share 2 cores)."""
        running = [j for j in self.list() if j.status == "running"]
        if running:
            raise JobError(f"job {running[0].id} ({running[0].title}) is still running; wait for it to finish")
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
