"""Long jobs (attribution maps, attacks, channel visualisations) with progress and cancel.

A job is a function ``work(progress) -> dict`` run on a worker thread. The library
functions it calls report ``progress(done, total)``; the callback handed to them records
the numbers and raises :class:`Cancelled` once the job is cancelled, so the library stops
at its next step and nothing is written (results are stored only after ``work`` returns).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from convlens.errors import ConvlensError
from convlens.progress import ProgressFn
from convlens.server.storage import new_token

__all__ = ["Cancelled", "Job", "JobManager"]


class Cancelled(Exception):
    """Raised inside a job's progress callback after it was cancelled."""


@dataclass
class Job:
    """One job's state, as the page polls it."""

    id: str
    kind: str
    status: str = "queued"  # queued | running | done | error | cancelled
    done: int = 0
    total: int = 0
    result: dict[str, Any] | None = None
    error: str | None = None
    started: float = field(default_factory=time.time)
    cancel_event: threading.Event = field(default_factory=threading.Event, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "done": self.done,
            "total": self.total,
            "result": self.result,
            "error": self.error,
        }


class JobManager:
    """Runs jobs on a small thread pool and keeps the most recent ``keep`` of them."""

    def __init__(self, workers: int = 1, keep: int = 256) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="convlens-job")
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self.keep = keep

    def _add(self, job: Job) -> Job:
        with self._lock:
            self._jobs[job.id] = job
            while len(self._jobs) > self.keep:
                oldest = next(iter(self._jobs.values()))
                if oldest.status in ("queued", "running"):
                    break
                self._jobs.popitem(last=False)
        return job

    def submit(self, kind: str, work: Callable[[ProgressFn], dict[str, Any]]) -> Job:
        job = self._add(Job(new_token(), kind))
        self._pool.submit(self._run, job, work)
        return job

    def finished(self, kind: str, result: dict[str, Any]) -> Job:
        """A job that is done already (a cached result): polled and shown like any other."""
        return self._add(Job(new_token(), kind, status="done", result=result))

    def _run(self, job: Job, work: Callable[[ProgressFn], dict[str, Any]]) -> None:
        if job.cancel_event.is_set():
            job.status = "cancelled"
            return
        job.status = "running"

        def progress(done: int, total: int) -> None:
            job.done, job.total = int(done), int(total)
            if job.cancel_event.is_set():
                raise Cancelled

        try:
            result = work(progress)
        except Cancelled:
            job.status = "cancelled"
        except ConvlensError as exc:
            job.error, job.status = str(exc), "error"
        except Exception as exc:  # reported to the page, the server keeps running
            job.error, job.status = f"{type(exc).__name__}: {exc}", "error"
        else:
            if job.cancel_event.is_set():
                job.status = "cancelled"
            else:
                job.result, job.status = result, "done"

    def get(self, job_id: str) -> Job:
        with self._lock:
            return self._jobs[job_id]

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        job.cancel_event.set()
        if job.status == "queued":
            job.status = "cancelled"
        return job

    def shutdown(self) -> None:
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            job.cancel_event.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
