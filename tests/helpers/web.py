"""Shared pieces of the web explorer's tests: polling a job through the API."""

from __future__ import annotations

import time
from typing import Any


def wait_for_job(client: Any, job_id: str, timeout: float = 60, poll: float = 0.01) -> dict:
    """Poll ``/api/jobs/{id}`` until the job has ended; its final state."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["status"] not in ("queued", "running"):
            return job
        time.sleep(poll)
    raise AssertionError(f"job {job_id} did not end in {timeout} s")
