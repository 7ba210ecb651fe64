"""Where the runner's shards are computed: forked local processes, or a Ray cluster.

:func:`~convlens.data.runner.run_dataset` computes shards in its own process by default.
With ``workers > 1`` or ``engine="ray"`` it hands a :class:`~convlens.data.runner.ShardTask`
and the list of pending shard indices to :func:`run_shards`, which yields each finished
shard as ``(manifest fields, encoded file)`` in whatever order they end. The caller writes,
verifies and lists every shard itself, so the manifest, checksums, resume and lock are the
same whatever computed the shards, and a worker that dies leaves nothing half-listed.

- **local**: ``workers`` processes forked from this one, each computing one whole shard
  at a time with one torch thread. On a CPU this scales better than torch's intra-op
  threads: decoding, resizing and the small layers of a CNN run serially inside one
  process, while separate processes overlap everything. The task is inherited through
  ``fork`` (never pickled), so ``fn`` may be any closure.
- **ray**: Ray Data over the shard list, with an actor pool of ``workers`` actors. Each
  actor deserialises the task (the model inside ``fn`` included) once and keeps it; a
  shard is one Ray Data row. Actors are restarted and their task retried when a worker
  process dies (Ray Data's defaults), so a killed worker costs only its shard's time.
  Connects to the cluster ``ray.init`` already joined (or ``RAY_ADDRESS``); otherwise
  starts a local one without the dashboard.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

import numpy as np

from convlens.errors import BadInputError

__all__ = ["RAY_HINT", "require_ray", "run_shards"]

RAY_HINT = "--engine ray needs Ray: pip install 'convlens[ray]'"

ShardResult = tuple[dict[str, Any], bytes]

# The task of the running local pool: forked workers inherit it instead of unpickling it.
_TASK: Any = None


def require_ray() -> Any:
    """Import Ray Data, or raise ``BadInputError`` saying how to install it."""
    try:
        import ray
        import ray.data  # the engine needs Ray Data, not only the core
    except ImportError as err:
        raise BadInputError(RAY_HINT) from err
    return ray


def run_shards(
    task: Any, pending: list[int], *, engine: str = "local", workers: int = 1
) -> Iterator[ShardResult]:
    """Compute ``task(k)`` for every pending shard ``k`` on ``engine``; yield results as they end."""
    if not pending:
        return iter(())
    if engine == "ray":
        return _ray_shards(task, pending, workers)
    return _local_shards(task, pending, workers)


# ---------------------------------------------------------------- local processes


def _init_local_worker() -> None:
    import torch

    torch.set_num_threads(1)  # one thread per process: the processes are the parallelism
    # A worker whose parent is killed (kill -9) would wait forever on the task queue, whose
    # write end it inherited by fork: leave as soon as the parent is gone.
    parent = os.getppid()
    threading.Thread(
        target=_exit_with_parent, args=(parent,), daemon=True, name="convlens-parent-watch"
    ).start()


def _exit_with_parent(parent: int, interval: float = 0.5) -> None:
    while os.getppid() == parent:
        time.sleep(interval)
    os._exit(1)


def _run_inherited(k: int) -> ShardResult:
    return _TASK(k)


def _local_shards(task: Any, pending: list[int], workers: int) -> Iterator[ShardResult]:
    global _TASK
    _TASK = task
    # "fork" so the task (closures, the model) is inherited, not pickled. At most
    # ``workers`` shards are in flight, so memory stays at one shard per worker.
    try:
        context = multiprocessing.get_context("fork")
    except ValueError as err:  # Windows has no fork
        raise BadInputError(
            f"workers={workers} with the local engine needs fork (Linux, macOS); use workers=1 or engine='ray'"
        ) from err
    todo = list(pending)
    try:
        with ProcessPoolExecutor(
            max_workers=min(workers, len(todo)), mp_context=context, initializer=_init_local_worker
        ) as pool:
            running: set[Future[ShardResult]] = set()
            while todo or running:
                while todo and len(running) < workers:
                    running.add(pool.submit(_run_inherited, todo.pop(0)))
                finished, running = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    yield future.result()
    finally:
        _TASK = None


# ---------------------------------------------------------------- Ray


class _RayShardActor:
    """A Ray Data actor: holds the deserialised task, computes one shard per row."""

    def __init__(self, task: Any) -> None:
        import torch

        torch.set_num_threads(1)
        self.task = task

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        metas, payloads = [], []
        for k in batch["shard"].tolist():
            meta, payload = self.task(int(k))
            metas.append(json.dumps(meta))
            payloads.append(payload)
        return {"meta": np.array(metas, dtype=object), "payload": np.array(payloads, dtype=object)}


def _ray_shards(task: Any, pending: list[int], workers: int) -> Iterator[ShardResult]:
    ray = require_ray()
    if not ray.is_initialized():
        ray.init(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    # a model defined in a user's file lives in a module the workers cannot import:
    # ship that module's code with the task instead of a reference to it
    from convlens.models.spec import USER_MODULES

    for module in USER_MODULES.values():
        ray.cloudpickle.register_pickle_by_value(module)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the caller's progress callback reports
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    dataset = ray.data.from_items([{"shard": k} for k in pending], override_num_blocks=len(pending))
    results = dataset.map_batches(
        _RayShardActor,
        fn_constructor_args=(task,),
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=1,
        batch_format="numpy",
    )
    for row in results.iter_rows():
        yield json.loads(row["meta"]), bytes(row["payload"])
