"""The dataset runner: stream images through a function in batches, into resumable shards.

``run_dataset`` is the engine behind the commands that work on whole folders (``explain
DIR``, ``attack DIR``, ``evaluate``, ``features``). Items are split by position into fixed
shards of ``shard_size``; each shard is computed batch by batch and written as one
``.npz`` or Parquet file, and ``manifest.json`` lists the finished shards with their
checksums and the process that computed them::

    out_dir/
      manifest.json      format, n_items, shard_size, item fingerprint, config, shards
      shard-00000.npz    outputs of items [0, shard_size): every key fn returned + "index"
      shard-00001.npz    ... (or shard-00000.parquet: one row per item, see below)
      .convlens.lock     held while a run writes here (a second run is refused)

Parquet shards (``shard_format="parquet"``) hold one row per readable item: ``index``,
``path``, ``label`` (-1 when unlabelled) and one column per key of ``fn``; a key whose rows
are arrays becomes a fixed-size-list column of the flattened row, its row shape kept in the
schema metadata, so :func:`read_outputs` gives back the same arrays as from ``.npz``.

Shards of one run can be computed by other processes (``workers > 1``, or
``engine="ray"``, see :mod:`convlens.data.engines`): they return the encoded shard, and
this process alone writes it, verifies it and lists it, so resuming works the same.

Crash safety (``kill -9`` at any moment): a shard is written to a temporary file, flushed,
fsynced and renamed into place, then the manifest is rewritten the same way and the folder
fsynced. A shard counts as done only once the manifest lists it with its sha256, so a run
killed at any point leaves a manifest that lists complete, verified shards; the next run
with the same items, shard size and config skips them and deletes or recomputes
everything else (temporary files, unlisted shards, shards whose checksum does not match).

Only one shard of outputs is held in memory at a time, whatever the number of items.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import socket
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from convlens.atomic import atomic_write_bytes, atomic_write_text, fsync_folder
from convlens.data.folders import LabelledItem
from convlens.data.images import load_image
from convlens.errors import BadInputError, ImageReadError
from convlens.hashing import file_sha256
from convlens.memory import ResidentCeiling, keep_freed_memory_unless_disabled
from convlens.progress import ProgressFn

__all__ = [
    "ENGINES",
    "SHARD_FORMATS",
    "RunReport",
    "ShardTask",
    "default_decode_workers",
    "iter_shards",
    "read_outputs",
    "run_dataset",
    "worker_id",
]

MANIFEST = "manifest.json"
_LOCK = ".convlens.lock"
_FORMAT = "convlens-dataset-run"
_VERSION = 1
_SHARD_RE = re.compile(r"^shard-\d+\.(npz|parquet)$")
SHARD_FORMATS = ("npz", "parquet")
ENGINES = ("local", "ray")
# Parquet columns the runner adds beside fn's keys.
_PARQUET_COLUMNS = ("index", "path", "label")
_SHAPES_KEY = b"convlens.shapes"
_TMP_SUFFIX = ".tmp"
# Only the runner's own temporary files are ever deleted, never a user's "notes.tmp".
_TMP_RE = re.compile(r"^(shard-\d+\.(npz|parquet)|manifest\.json)\.tmp$")

# Test hook: called with "shard-written-tmp", "shard-replaced", "manifest-written-tmp" and
# "manifest-written" at those moments, so a test can kill the process exactly there.
_fault_point: Callable[[str], None] | None = None


def _fault(point: str) -> None:
    if _fault_point is not None:
        _fault_point(point)


@dataclass
class RunReport:
    """What :func:`run_dataset` did.

    Attributes
    ----------
    out_dir
        The output folder.
    n_items
        Number of items given.
    n_done
        Items with outputs (all finished shards, resumed ones included).
    failed
        ``(path, reason)`` of every item that could not be read, in item order.
    shards
        File names of the finished shards, in order.
    computed_shards
        Indices of the shards computed by this call (shards resumed from disk excluded).
    """

    out_dir: Path
    n_items: int
    n_done: int
    failed: list[tuple[str, str]] = field(default_factory=list)
    shards: list[str] = field(default_factory=list)
    computed_shards: list[int] = field(default_factory=list)


def run_dataset(
    items: Sequence[LabelledItem | str | Path],
    fn: Callable[[torch.Tensor, list[LabelledItem]], Mapping[str, torch.Tensor | np.ndarray]],
    out_dir: str | Path,
    *,
    load: Callable[[Path], torch.Tensor] = load_image,
    batch_size: int = 16,
    shard_size: int = 256,
    num_workers: int = 0,
    config: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
    shard_format: str = "npz",
    engine: str = "local",
    workers: int = 1,
    prefetch: int = 2,
) -> RunReport:
    """Run ``fn`` over every item in batches, writing resumable shards to ``out_dir``.

    Parameters
    ----------
    items
        Images to process: :class:`LabelledItem` or paths (unlabelled).
    fn
        ``fn(batch, items) -> {name: array}``: ``batch`` is the CPU tensor of the readable
        items of one batch, stacked along dim 0; ``items`` are those items. Every value must
        have one row per item (first dimension ``len(items)``), and the names must be the
        same for every batch. Move the batch to your device inside ``fn``.
    out_dir
        Folder for the shards and the manifest (created if needed).
    load
        ``load(path) -> tensor``, the same shape for every item of a batch (resize inside
        it when sizes vary). Raise :class:`~convlens.errors.ImageReadError` (or any
        :class:`~convlens.errors.BadInputError`) for an unreadable file: it is recorded as
        a failure and skipped. Must be a module-level function when ``num_workers > 0``.
    batch_size
        Items per call of ``fn``.
    shard_size
        Items per shard file (need not be a multiple of ``batch_size``).
    num_workers
        Decode workers: processes that run ``load`` ahead of ``fn`` (0: ``load`` runs in
        this process, between calls of ``fn``). Batches come back in item order, so the
        shards are the same bytes whatever the number. Used when this process computes the
        shards (``engine="local"``, ``workers=1``); each decode worker has one torch thread.
    config
        JSON-serialisable description of what produced the outputs (method, parameters,
        model id, ...), stored in the manifest. Resuming with another config is refused.
    overwrite
        Delete the shards and manifest of a previous run in ``out_dir`` and start again.
    progress
        Called as ``progress(done, total)`` with the items processed so far (resumed ones
        included) after each batch (after each shard when other processes compute them).
    shard_format
        ``"npz"`` (default) or ``"parquet"`` (one row per item with its path and label;
        ``fn`` may then not return the keys ``path`` or ``label``).
    engine
        ``"local"``: this machine; ``"ray"``: a Ray cluster (the one ``ray.init`` connected
        to, else a local one), through Ray Data with an actor pool of ``workers`` actors.
        ``fn`` and ``load`` are pickled (cloudpickle) to the other processes.
    prefetch
        Batches each decode worker may have loaded ahead of ``fn``: at most
        ``num_workers * prefetch`` batches wait in memory, whatever the number of items.
    workers
        Processes that compute shards. Local with ``workers > 1``: forked processes, one
        shard each at a time, each with one torch thread (on CPU this scales better than
        torch threads in one process, which leave the decoding and the small layers
        serial). ``fn`` runs in those processes: it must not rely on state it changes.

    Returns
    -------
    RunReport

    Raises
    ------
    BadInputError
        ``out_dir`` holds a run of other items, shard size or config (pick a new folder or
        pass ``overwrite=True``), another run is writing there, a batch's images differ
        in shape, or ``fn`` returns rows that do not match its batch.
    TypeError
        An item is not a path, ``config`` is not JSON-serialisable, or ``fn`` returns
        something other than a mapping of tensors or arrays.

    Examples
    --------
    >>> report = run_dataset(scan_labelled("pets/"), lambda x, its: {"mean": x.mean((1, 2, 3))},
    ...                      "out/", config={"method": "mean"})  # doctest: +SKIP
    >>> read_outputs("out/")["mean"].shape  # doctest: +SKIP
    """
    entries = _as_items(items)
    _check_sizes(batch_size, shard_size, num_workers)
    _check_choice("shard_format", shard_format, SHARD_FORMATS)
    _check_choice("engine", engine, ENGINES)
    _check_int("workers", workers, 1)
    _check_int("prefetch", prefetch, 1)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise BadInputError(f"out_dir {out} is a file; pass a folder for the shards")
    if engine == "ray":
        from convlens.data.engines import require_ray

        require_ray()  # before anything is written
    out.mkdir(parents=True, exist_ok=True)
    header = _header(entries, shard_size, config, shard_format)
    with _locked(out):
        if overwrite:
            _clear(out)
        shards = _resume(out, header)
        _write_manifest(out, header, shards)
        n_shards = -(-len(entries) // shard_size)
        pending = [k for k in range(n_shards) if k not in shards]
        done = sum(e["stop"] - e["start"] for e in shards.values())
        if progress is not None:
            progress(done, len(entries))
        computed: list[int] = []
        if engine == "local" and workers == 1:
            finished = _compute(
                entries,
                pending,
                fn,
                out,
                load,
                batch_size,
                shard_size,
                num_workers,
                progress,
                done,
                shard_format,
                prefetch,
            )
        else:
            task = ShardTask(entries, fn, load, batch_size, shard_size, shard_format)
            finished = _gather(out, task, pending, engine, workers, progress, done, len(entries))
        for entry in finished:
            shards[entry["index"]] = entry
            _write_manifest(out, header, shards)
            computed.append(entry["index"])
    ordered = [shards[k] for k in sorted(shards)]
    return RunReport(
        out_dir=out,
        n_items=len(entries),
        n_done=sum(e["n_ok"] for e in ordered),
        failed=[(path, reason) for e in ordered for path, reason in e["failures"]],
        shards=[e["file"] for e in ordered],
        computed_shards=computed,
    )


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def default_decode_workers(engine: str, workers: int, decode_workers: int | None) -> int:
    """Decode processes for a run: ``decode_workers`` checked, or the default when None.

    The default is one decoder beside the model's process when the model's torch threads
    leave a CPU free: decoding then runs on that CPU, ahead of the forward pass. When the
    torch threads already use every CPU, a decoder can only take CPU from them and the
    two processes' threads preempt each other, so the model's process decodes between
    forward passes instead (on 2 CPUs with 2 torch threads: 0.88x the forward-only rate
    against 0.78x with a decoder; benchmarks/README.md, "Dataset throughput"). Shards
    computed by other processes (``workers > 1``, Ray) decode inside those processes, so 0
    there.
    """
    if decode_workers is None:
        if engine != "local" or workers != 1:
            return 0
        return 1 if torch.get_num_threads() < usable_cpus() else 0
    if (
        isinstance(decode_workers, bool)
        or not isinstance(decode_workers, int)
        or decode_workers < 0
    ):
        raise BadInputError(f"decode_workers is {decode_workers!r}; pass an integer >= 0")
    return decode_workers


def iter_shards(out_dir: str | Path) -> Iterator[tuple[list[int], dict[str, np.ndarray]]]:
    """Yield ``(item indices, outputs)`` for each finished shard of a run, in order.

    The streaming alternative to :func:`read_outputs`: one shard in memory at a time.
    Each shard is checked against the sha256 in the manifest before it is yielded.

    Raises
    ------
    BadInputError
        ``out_dir`` has no manifest, or a shard is missing or does not match its checksum.
    """
    folder = Path(out_dir)
    manifest = _read_manifest(folder)
    if manifest is None:
        raise BadInputError(
            f"{folder}: no {MANIFEST}, so no finished run_dataset outputs here; run run_dataset with this out_dir first"
        )
    entries = manifest["shards"]
    needed = {"index", "file", "sha256"}
    if not all(isinstance(e, dict) and needed <= e.keys() for e in entries):
        raise BadInputError(
            f"{folder / MANIFEST} has malformed shard entries; rerun run_dataset with overwrite=True"
        )
    return _iter_verified(folder, sorted(entries, key=lambda e: e["index"]))


def read_outputs(out_dir: str | Path) -> dict[str, np.ndarray]:
    """All outputs of the finished shards of a run, concatenated in item order.

    Returns
    -------
    dict of str to numpy.ndarray
        Every key ``fn`` returned, plus ``"index"``: the item index of each row (items
        that could not be read, or whose shard is unfinished, have no row). Parquet shards
        also give ``"path"`` (str) and ``"label"`` (int64, -1 when unlabelled).

    Raises
    ------
    BadInputError
        As :func:`iter_shards`, or the shards hold different keys or shapes.
    """
    parts: dict[str, list[np.ndarray]] = {}
    indices: list[int] = []
    for index, arrays in iter_shards(out_dir):
        if not index:
            continue  # a shard of unreadable items only: no keys to compare
        if parts and set(arrays) != set(parts):
            raise BadInputError(
                f"{out_dir}: shards hold different outputs ({sorted(parts)} vs {sorted(arrays)}); rerun into a new out_dir"
            )
        for key, value in arrays.items():
            parts.setdefault(key, []).append(value)
        indices.extend(index)
    try:
        result = {key: np.concatenate(values) for key, values in parts.items()}
    except ValueError as err:
        raise BadInputError(
            f"{out_dir}: shards hold outputs of different shapes ({err}); rerun into a new out_dir"
        ) from err
    result["index"] = np.asarray(indices, dtype=np.int64)
    return result


# ---------------------------------------------------------------- validation and manifest


def _as_items(items: Sequence[LabelledItem | str | Path]) -> list[LabelledItem]:
    result = []
    for item in items:
        if isinstance(item, LabelledItem):
            result.append(item)
        elif isinstance(item, (str, os.PathLike)):
            result.append(LabelledItem(Path(item), None))
        else:
            raise TypeError(
                f"items must be LabelledItem or paths, got {type(item).__name__}: {item!r}"
            )
    return result


def _check_sizes(batch_size: int, shard_size: int, num_workers: int) -> None:
    for name, value, low in (
        ("batch_size", batch_size, 1),
        ("shard_size", shard_size, 1),
        ("num_workers", num_workers, 0),
    ):
        _check_int(name, value, low)


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise BadInputError(f"{name} is {value!r}; pass an integer >= {low}")


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise BadInputError(f"{name} is {value!r}; choose one of {', '.join(choices)}")


def _header(
    entries: list[LabelledItem],
    shard_size: int,
    config: Mapping[str, Any] | None,
    shard_format: str = "npz",
) -> dict[str, Any]:
    """The manifest fields that identify a run; a resume must match all of them."""
    digest = hashlib.sha256()
    for item in entries:
        # Labels are part of the fingerprint: fn sees them, so they can change the outputs.
        label = "" if item.label is None else str(item.label)
        digest.update(f"{item.path}\t{label}\n".encode())
    try:
        # The JSON round trip makes tuples lists, so a resumed config compares equal.
        stored = (
            None
            if config is None
            else json.loads(json.dumps(dict(config), sort_keys=True, allow_nan=False))
        )
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"config must be JSON-serialisable (str, numbers, lists, dicts; no NaN): {err}"
        ) from err
    return {
        "format": _FORMAT,
        "version": _VERSION,
        "n_items": len(entries),
        "shard_size": shard_size,
        "shard_format": shard_format,
        "items_sha256": digest.hexdigest(),
        "config": stored,
    }


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise BadInputError(
            f"{path} cannot be read ({err}); pass overwrite=True to start again or pick a new out_dir"
        ) from err
    if (
        not isinstance(data, dict)
        or data.get("format") != _FORMAT
        or not isinstance(data.get("shards"), list)
    ):
        raise BadInputError(
            f"{path} is not a convlens run manifest; pick a new out_dir or pass overwrite=True"
        )
    if data.get("version") != _VERSION:
        raise BadInputError(
            f"{path} has format version {data.get('version')!r}, this convlens writes {_VERSION}; pick a new out_dir or pass overwrite=True"
        )
    return data


def _resume(folder: Path, header: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """Finished shards that can be kept; deletes every other shard or temporary file."""
    old = _read_manifest(folder)
    kept: dict[int, dict[str, Any]] = {}
    if old is not None:
        _check_same_run(folder, old, header)
        for entry in old["shards"]:
            if _valid_entry(folder, entry, header):
                kept[entry["index"]] = entry
    names = {e["file"] for e in kept.values()}
    for path in folder.iterdir():
        if _TMP_RE.match(path.name) or (_SHARD_RE.match(path.name) and path.name not in names):
            path.unlink()
    return kept


def _check_same_run(folder: Path, old: dict[str, Any], header: dict[str, Any]) -> None:
    differ = []
    if old.get("n_items") != header["n_items"]:
        differ.append(f"items ({old.get('n_items')} stored, {header['n_items']} given)")
    elif old.get("items_sha256") != header["items_sha256"]:
        differ.append("items (other paths or labels)")
    if old.get("shard_size") != header["shard_size"]:
        differ.append(f"shard_size ({old.get('shard_size')} stored, {header['shard_size']} given)")
    if old.get("shard_format", "npz") != header["shard_format"]:
        differ.append(
            f"shard_format ({old.get('shard_format', 'npz')} stored, {header['shard_format']} given)"
        )
    if old.get("config") != header["config"]:
        differ.append(f"config ({old.get('config')!r} stored, {header['config']!r} given)")
    if differ:
        raise BadInputError(
            f"{folder} holds outputs of another run: different {'; '.join(differ)}; "
            + "pick a new out_dir or pass overwrite=True to replace them"
        )


def _valid_entry(folder: Path, entry: Any, header: dict[str, Any]) -> bool:
    """A listed shard is kept only if it is where and what the manifest says."""
    try:
        k = entry["index"]
        start, stop = (
            k * header["shard_size"],
            min((k + 1) * header["shard_size"], header["n_items"]),
        )
        if entry["file"] != _shard_name(k, header["shard_format"]) or (
            entry["start"],
            entry["stop"],
        ) != (start, stop):
            return False
        path = folder / entry["file"]
        return path.is_file() and file_sha256(path) == entry["sha256"]
    except (KeyError, TypeError):
        return False


def _clear(folder: Path) -> None:
    # The manifest goes first: if we are killed halfway, what remains is unlisted and is
    # deleted by the next run instead of being trusted.
    (folder / MANIFEST).unlink(missing_ok=True)
    fsync_folder(folder)
    for path in folder.iterdir():
        if _SHARD_RE.match(path.name) or _TMP_RE.match(path.name):
            path.unlink()


def _write_manifest(
    folder: Path, header: dict[str, Any], shards: dict[int, dict[str, Any]]
) -> None:
    data = {**header, "shards": [shards[k] for k in sorted(shards)]}
    # A fixed temporary name: a resumed run finds and deletes exactly its own leftovers.
    atomic_write_text(
        folder / MANIFEST,
        json.dumps(data, indent=1),
        fsync=True,
        temp=folder / (MANIFEST + _TMP_SUFFIX),
        before_replace=lambda: _fault("manifest-written-tmp"),
    )
    _fault("manifest-written")


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Refuse a second concurrent run in ``folder``.

    POSIX record locks are released when the process dies (even by ``kill -9``) and are not
    inherited by forked DataLoader workers, so a resume never waits for stale workers.
    """
    try:
        import fcntl
    except ImportError:  # Windows: no lock
        yield
        return
    fd = os.open(folder / _LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            raise BadInputError(
                f"{folder} is being written by another running run_dataset; wait for it to finish or pick another out_dir"
            ) from err
        yield
    finally:
        os.close(fd)  # releases the lock


# ---------------------------------------------------------------- computing shards


@dataclass
class _Loaded:
    index: int
    image: torch.Tensor | None
    reason: str | None


@dataclass
class _Batch:
    """A collated batch: the readable items stacked, the unreadable ones with reasons."""

    indices: list[int]
    images: torch.Tensor | list[torch.Tensor] | None  # a list when the shapes differ
    failures: list[tuple[int, str]]


class _ItemDataset(Dataset[_Loaded]):
    """Loads items; an unreadable file becomes a failure record instead of an exception."""

    def __init__(self, paths: list[Path], load: Callable[[Path], torch.Tensor]) -> None:
        self.paths = paths
        self.load = load

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> _Loaded:
        try:
            image = self.load(self.paths[index])
        except BadInputError as err:  # ImageReadError included
            reason = err.reason if isinstance(err, ImageReadError) else str(err)
            return _Loaded(index, None, reason)
        return _Loaded(index, torch.as_tensor(image), None)


def _collate(loaded: list[_Loaded]) -> _Batch:
    ok = [one for one in loaded if one.image is not None]
    failures = [(one.index, str(one.reason)) for one in loaded if one.image is None]
    images: torch.Tensor | list[torch.Tensor] | None = None
    if ok:
        tensors = [one.image for one in ok if one.image is not None]
        # Differing shapes are reported by the main process, not as a worker traceback.
        same = all(t.shape == tensors[0].shape for t in tensors)
        images = torch.stack(tensors) if same else tensors
    return _Batch([one.index for one in ok], images, failures)


class _ShardBuffer:
    """The outputs of one shard while it is being computed."""

    def __init__(self, index: int, start: int, stop: int, shard_format: str = "npz") -> None:
        self.index, self.start, self.stop = index, start, stop
        self.shard_format = shard_format
        self.ok: list[int] = []
        self.failures: list[tuple[str, str]] = []
        self.parts: dict[str, list[np.ndarray]] = {}
        self.keys: set[str] | None = None

    def add(
        self,
        batch: _Batch,
        fn: Callable[[torch.Tensor, list[LabelledItem]], Mapping[str, torch.Tensor | np.ndarray]],
        entries: list[LabelledItem],
        keys: set[str] | None,
    ) -> set[str] | None:
        """Run ``fn`` on the batch's readable items and keep the rows; returns fn's keys."""
        self.failures.extend((str(entries[i].path), reason) for i, reason in batch.failures)
        if not batch.indices:
            return keys
        outputs = _call(fn, batch, entries, keys)
        if self.shard_format == "parquet":
            clash = sorted(set(outputs) & set(_PARQUET_COLUMNS))
            if clash:
                raise BadInputError(
                    f"fn returned the key {clash[0]!r}, a column Parquet shards add themselves; rename it or use shard_format='npz'"
                )
        for key, value in outputs.items():
            self.parts.setdefault(key, []).append(value)
        self.ok.extend(batch.indices)
        return set(outputs)

    def arrays(self) -> dict[str, np.ndarray]:
        arrays = {key: np.concatenate(values) for key, values in self.parts.items()}
        arrays["index"] = np.asarray(self.ok, dtype=np.int64)
        return arrays

    def meta(self) -> dict[str, Any]:
        """The manifest fields of this shard that do not depend on its file."""
        return {
            "index": self.index,
            "start": self.start,
            "stop": self.stop,
            "n_ok": len(self.ok),
            "failures": [list(f) for f in self.failures],
            "worker": worker_id(),
        }


def worker_id() -> str:
    """``hostname:pid`` of this process, recorded with every shard it computes."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _compute(
    entries: list[LabelledItem],
    pending: list[int],
    fn: Callable[[torch.Tensor, list[LabelledItem]], Mapping[str, torch.Tensor | np.ndarray]],
    folder: Path,
    load: Callable[[Path], torch.Tensor],
    batch_size: int,
    shard_size: int,
    num_workers: int,
    progress: ProgressFn | None,
    done: int,
    shard_format: str = "npz",
    prefetch: int = 2,
) -> Iterator[dict[str, Any]]:
    """Compute the pending shards in this process; yield each manifest entry once its file
    is in place."""
    plan: list[tuple[int, list[int]]] = []
    for k in pending:
        start, stop = k * shard_size, min((k + 1) * shard_size, len(entries))
        plan.extend(
            (k, list(range(b, min(b + batch_size, stop)))) for b in range(start, stop, batch_size)
        )
    if not plan:
        return
    # One loader over the batches of every pending shard: workers start once, and batches
    # come back in order, so a shard is complete when its last batch arrives. The loader
    # keeps at most prefetch batches per worker in flight: the bounded queue between the
    # decoding processes and fn, so memory does not grow with the number of items.
    loader = DataLoader(
        _ItemDataset([e.path for e in entries], load),
        batch_sampler=[positions for _, positions in plan],
        collate_fn=_collate,
        num_workers=num_workers,
        prefetch_factor=prefetch if num_workers > 0 else None,
        # its own generator: the loader draws a base seed per iteration, which would
        # otherwise come from (and move) the caller's global RNG
        generator=torch.Generator().manual_seed(0),
    )
    keys: set[str] | None = None
    buffer: _ShardBuffer | None = None
    ceiling = ResidentCeiling()
    for (k, positions), batch in zip(plan, loader):
        if buffer is None:
            buffer = _ShardBuffer(
                k, k * shard_size, min((k + 1) * shard_size, len(entries)), shard_format
            )
        keys = buffer.add(batch, fn, entries, keys)
        # freed activations pinned below the codes kept in the buffer would make RSS grow
        # with the images; trimming every batch would refault them (convlens/memory.py)
        ceiling.check()
        done += len(positions)
        if progress is not None:
            progress(done, len(entries))
        if positions[-1] == buffer.stop - 1:
            yield _finish(
                folder, buffer.meta(), _encode(buffer.arrays(), shard_format, entries), shard_format
            )
            buffer = None


_ceilings: list[ResidentCeiling] = []


def _worker_ceiling() -> ResidentCeiling:
    """One ceiling per process that computes shards (it outlives a single shard)."""
    if not _ceilings:
        _ceilings.append(ResidentCeiling())
    return _ceilings[0]


@dataclass
class ShardTask:
    """Everything needed to compute one shard in another process: ``task(k)``.

    Pickled (with cloudpickle on Ray) to the processes that compute shards; it returns the
    shard's manifest fields and its encoded file, which the driver writes and lists. Errors
    of the user's input come back as values, so the driver raises them as one line.
    """

    entries: list[LabelledItem]
    fn: Callable[[torch.Tensor, list[LabelledItem]], Mapping[str, torch.Tensor | np.ndarray]]
    load: Callable[[Path], torch.Tensor]
    batch_size: int
    shard_size: int
    shard_format: str

    def __call__(self, k: int) -> tuple[dict[str, Any], bytes]:
        keep_freed_memory_unless_disabled()  # a worker process of ours: as the CLI does
        start, stop = k * self.shard_size, min((k + 1) * self.shard_size, len(self.entries))
        buffer = _ShardBuffer(k, start, stop, self.shard_format)
        dataset = _ItemDataset([e.path for e in self.entries], self.load)
        keys: set[str] | None = None
        try:
            for b in range(start, stop, self.batch_size):
                batch = _collate([dataset[i] for i in range(b, min(b + self.batch_size, stop))])
                keys = buffer.add(batch, self.fn, self.entries, keys)
                _worker_ceiling().check()
            payload = _encode(buffer.arrays(), self.shard_format, self.entries)
        except BadInputError as err:
            return {"index": k, "error": ["BadInputError", str(err)]}, b""
        except TypeError as err:
            return {"index": k, "error": ["TypeError", str(err)]}, b""
        return buffer.meta(), payload


def _gather(
    folder: Path,
    task: ShardTask,
    pending: list[int],
    engine: str,
    workers: int,
    progress: ProgressFn | None,
    done: int,
    total: int,
) -> Iterator[dict[str, Any]]:
    """Shards computed by other processes, written and verified here, in the order they end."""
    from convlens.data.engines import run_shards

    for meta, payload in run_shards(task, pending, engine=engine, workers=workers):
        if "error" in meta:
            kind, message = meta["error"]
            raise (BadInputError if kind == "BadInputError" else TypeError)(message)
        done += meta["stop"] - meta["start"]
        if progress is not None:
            progress(done, total)
        yield _finish(folder, meta, payload, task.shard_format)


def _call(
    fn: Callable[[torch.Tensor, list[LabelledItem]], Mapping[str, torch.Tensor | np.ndarray]],
    batch: _Batch,
    entries: list[LabelledItem],
    keys: set[str] | None,
) -> dict[str, np.ndarray]:
    """Run ``fn`` on a batch and check its outputs; numpy copies on the CPU."""
    items = [entries[i] for i in batch.indices]
    if not isinstance(batch.images, torch.Tensor):
        raise _shape_error(items, batch.images or [])
    outputs = fn(batch.images, items)
    if not isinstance(outputs, Mapping):
        raise TypeError(
            f"fn must return a mapping of name -> tensor or array, got {type(outputs).__name__}"
        )
    if keys is not None and set(outputs) != keys:
        raise BadInputError(
            f"fn returned keys {sorted(outputs)} after {sorted(keys)}; return the same keys for every batch"
        )
    return {key: _to_numpy(key, value, len(items)) for key, value in outputs.items()}


def _shape_error(items: list[LabelledItem], tensors: list[torch.Tensor]) -> BadInputError:
    first = tensors[0].shape
    j = next((j for j, t in enumerate(tensors) if t.shape != first), 0)
    return BadInputError(
        f"images in one batch differ in shape ({items[0].path}: {tuple(first)}, "
        + f"{items[j].path}: {tuple(tensors[j].shape)}); pass a load function that resizes "
        + "to a common size, or batch_size=1"
    )


def _to_numpy(key: Any, value: Any, n: int) -> np.ndarray:
    if not isinstance(key, str) or not key or "/" in key or key == "index":
        raise BadInputError(
            f"fn returned the key {key!r}; use non-empty names without '/', other than 'index'"
        )
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.dtype == torch.bfloat16:
            value = value.float()  # numpy has no bfloat16
        array = value.numpy().copy()
    elif isinstance(value, np.ndarray):
        array = value.copy()  # fn may reuse its buffer for the next batch
    else:
        raise TypeError(
            f"fn returned {type(value).__name__} for {key!r}; return a tensor or numpy array"
        )
    if array.dtype.hasobject:
        raise TypeError(f"fn returned an object array for {key!r}; return numeric arrays")
    if array.ndim == 0 or array.shape[0] != n:
        raise BadInputError(
            f"fn returned {key!r} with shape {array.shape} for a batch of {n} items; return one row per item"
        )
    return array


def _finish(
    folder: Path, meta: dict[str, Any], payload: bytes, shard_format: str
) -> dict[str, Any]:
    """Write an encoded shard atomically; its manifest entry (file and sha256 added)."""
    name = _shard_name(meta["index"], shard_format)
    digest = _write_atomic(folder / name, payload)
    entry = {"index": meta["index"], "file": name, "sha256": digest}
    entry.update((key, value) for key, value in meta.items() if key != "index")
    return entry


# ---------------------------------------------------------------- shard files


def _encode(arrays: dict[str, np.ndarray], shard_format: str, entries: list[LabelledItem]) -> bytes:
    return _npz_bytes(arrays) if shard_format == "npz" else _parquet_bytes(arrays, entries)


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    sink = io.BytesIO()
    # Written member by member rather than through np.savez, whose own keyword arguments
    # ("file", "allow_pickle") would collide with output names.
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for key, array in arrays.items():
            with archive.open(f"{key}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)
    return sink.getvalue()


def _parquet_bytes(arrays: dict[str, np.ndarray], entries: list[LabelledItem]) -> bytes:
    """One row per item: index, path, label (-1: unlabelled), then fn's keys."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    index = arrays["index"]
    columns: dict[str, Any] = {
        "index": pa.array(index, pa.int64()),
        "path": pa.array([str(entries[i].path) for i in index], pa.string()),
        "label": pa.array(
            [-1 if entries[i].label is None else int(entries[i].label) for i in index], pa.int64()
        ),
    }
    shapes: dict[str, list[int]] = {}
    for key, array in arrays.items():
        if key == "index":
            continue
        if array.ndim == 1:
            columns[key] = pa.array(array)
        else:
            # A row that is an array: its flattened values as a fixed-size list (what Arrow
            # tools read as a vector column); the row shape goes into the schema metadata.
            shapes[key] = list(array.shape[1:])
            width = int(np.prod(array.shape[1:]))
            columns[key] = pa.FixedSizeListArray.from_arrays(
                pa.array(np.ascontiguousarray(array).reshape(-1)), width
            )
    table = pa.table(columns).replace_schema_metadata({_SHAPES_KEY: json.dumps(shapes).encode()})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def _read_parquet(data: bytes) -> dict[str, np.ndarray]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(pa.BufferReader(data))
    shapes = json.loads((table.schema.metadata or {}).get(_SHAPES_KEY, b"{}"))
    n = table.num_rows
    arrays: dict[str, np.ndarray] = {}
    for name in table.column_names:
        column = table.column(name).combine_chunks()
        if pa.types.is_fixed_size_list(column.type):
            values = column.flatten().to_numpy(zero_copy_only=False)
            arrays[name] = values.reshape(n, *shapes.get(name, [column.type.list_size]))
        elif pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            arrays[name] = np.asarray(column.to_pylist(), dtype=np.str_).reshape(n)
        else:
            arrays[name] = column.to_numpy(zero_copy_only=False)
    return arrays


def _write_atomic(path: Path, data: bytes) -> str:
    """Write ``data`` to ``path`` through a fsynced temporary file; return its sha256."""
    atomic_write_bytes(
        path,
        data,
        fsync=True,
        temp=path.with_name(path.name + _TMP_SUFFIX),
        before_replace=lambda: _fault("shard-written-tmp"),
    )
    _fault("shard-replaced")
    return hashlib.sha256(data).hexdigest()


def _iter_verified(
    folder: Path, entries: list[dict[str, Any]]
) -> Iterator[tuple[list[int], dict[str, np.ndarray]]]:
    for entry in entries:
        path = folder / entry["file"]
        try:
            data = path.read_bytes()
        except OSError as err:
            raise BadInputError(
                f"{path} is listed in {MANIFEST} but cannot be read ({err}); rerun run_dataset on {folder} to recompute it"
            ) from err
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise BadInputError(
                f"{path} does not match its checksum in {MANIFEST} (modified or corrupt); rerun run_dataset on {folder} to recompute it"
            )
        if path.suffix == ".parquet":
            arrays = _read_parquet(data)
        else:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                arrays = {key: npz[key] for key in npz.files}
        index = arrays.pop("index").tolist()
        yield index, arrays


def _shard_name(k: int, shard_format: str = "npz") -> str:
    return f"shard-{k:05d}.{shard_format}"
