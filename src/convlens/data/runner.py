"""The dataset runner: stream images through a function in batches, into resumable shards.

``run_dataset`` is the engine behind the commands that work on whole folders (``explain
DIR``, ``attack DIR``, ``evaluate``, ``features``). Items are split by position into fixed
shards of ``shard_size``; each shard is computed batch by batch and written as one
``.npz`` file, and ``manifest.json`` lists the finished shards with their checksums::

    out_dir/
      manifest.json      format, n_items, shard_size, item fingerprint, config, shards
      shard-00000.npz    outputs of items [0, shard_size): every key fn returned + "index"
      shard-00001.npz    ...
      .convlens.lock     held while a run writes here (a second run is refused)

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
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from convlens.data.folders import LabelledItem
from convlens.data.images import load_image
from convlens.errors import BadInputError, ImageReadError

__all__ = ["RunReport", "iter_shards", "read_outputs", "run_dataset"]

MANIFEST = "manifest.json"
_LOCK = ".convlens.lock"
_FORMAT = "convlens-dataset-run"
_VERSION = 1
_SHARD_RE = re.compile(r"^shard-\d+\.npz$")
_TMP_SUFFIX = ".tmp"
# Only the runner's own temporary files are ever deleted, never a user's "notes.tmp".
_TMP_RE = re.compile(r"^(shard-\d+\.npz|manifest\.json)\.tmp$")

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
    progress: Callable[[int, int], None] | None = None,
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
        DataLoader worker processes that decode images (0: in this process).
    config
        JSON-serialisable description of what produced the outputs (method, parameters,
        model id, ...), stored in the manifest. Resuming with another config is refused.
    overwrite
        Delete the shards and manifest of a previous run in ``out_dir`` and start again.
    progress
        Called as ``progress(done, total)`` with the items processed so far (resumed ones
        included) after each batch.

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
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise BadInputError(f"out_dir {out} is a file; pass a folder for the shards")
    out.mkdir(parents=True, exist_ok=True)
    header = _header(entries, shard_size, config)
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
        for entry in _compute(entries, pending, fn, out, load, batch_size, shard_size, num_workers, progress, done):
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
        raise BadInputError(f"{folder}: no {MANIFEST}, so no finished run_dataset outputs here; run run_dataset with this out_dir first")
    entries = manifest["shards"]
    needed = {"index", "file", "sha256"}
    if not all(isinstance(e, dict) and needed <= e.keys() for e in entries):
        raise BadInputError(f"{folder / MANIFEST} has malformed shard entries; rerun run_dataset with overwrite=True")
    return _iter_verified(folder, sorted(entries, key=lambda e: e["index"]))


def read_outputs(out_dir: str | Path) -> dict[str, np.ndarray]:
    """All outputs of the finished shards of a run, concatenated in item order.

    Returns
    -------
    dict of str to numpy.ndarray
        Every key ``fn`` returned, plus ``"index"``: the item index of each row (items
        that could not be read, or whose shard is unfinished, have no row).

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
            raise BadInputError(f"{out_dir}: shards hold different outputs ({sorted(parts)} vs {sorted(arrays)}); rerun into a new out_dir")
        for key, value in arrays.items():
            parts.setdefault(key, []).append(value)
        indices.extend(index)
    try:
        result = {key: np.concatenate(values) for key, values in parts.items()}
    except ValueError as err:
        raise BadInputError(f"{out_dir}: shards hold outputs of different shapes ({err}); rerun into a new out_dir") from err
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
            raise TypeError(f"items must be LabelledItem or paths, got {type(item).__name__}: {item!r}")
    return result


def _check_sizes(batch_size: int, shard_size: int, num_workers: int) -> None:
    for name, value, low in (("batch_size", batch_size, 1), ("shard_size", shard_size, 1), ("num_workers", num_workers, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise BadInputError(f"{name} is {value!r}; pass an integer >= {low}")


def _header(entries: list[LabelledItem], shard_size: int, config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The manifest fields that identify a run; a resume must match all of them."""
    digest = hashlib.sha256()
    for item in entries:
        # Labels are part of the fingerprint: fn sees them, so they can change the outputs.
        label = "" if item.label is None else str(item.label)
        digest.update(f"{item.path}\t{label}\n".encode())
    try:
        # The JSON round trip makes tuples lists, so a resumed config compares equal.
        stored = None if config is None else json.loads(json.dumps(dict(config), sort_keys=True, allow_nan=False))
    except (TypeError, ValueError) as err:
        raise TypeError(f"config must be JSON-serialisable (str, numbers, lists, dicts; no NaN): {err}") from err
    return {
        "format": _FORMAT,
        "version": _VERSION,
        "n_items": len(entries),
        "shard_size": shard_size,
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
        raise BadInputError(f"{path} cannot be read ({err}); pass overwrite=True to start again or pick a new out_dir") from err
    if not isinstance(data, dict) or data.get("format") != _FORMAT or not isinstance(data.get("shards"), list):
        raise BadInputError(f"{path} is not a convlens run manifest; pick a new out_dir or pass overwrite=True")
    if data.get("version") != _VERSION:
        raise BadInputError(f"{path} has format version {data.get('version')!r}, this convlens writes {_VERSION}; pick a new out_dir or pass overwrite=True")
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
        start, stop = k * header["shard_size"], min((k + 1) * header["shard_size"], header["n_items"])
        if entry["file"] != _shard_name(k) or (entry["start"], entry["stop"]) != (start, stop):
            return False
        path = folder / entry["file"]
        return path.is_file() and _sha256_file(path) == entry["sha256"]
    except (KeyError, TypeError):
        return False


def _clear(folder: Path) -> None:
    # The manifest goes first: if we are killed halfway, what remains is unlisted and is
    # deleted by the next run instead of being trusted.
    (folder / MANIFEST).unlink(missing_ok=True)
    _fsync_dir(folder)
    for path in folder.iterdir():
        if _SHARD_RE.match(path.name) or _TMP_RE.match(path.name):
            path.unlink()


def _write_manifest(folder: Path, header: dict[str, Any], shards: dict[int, dict[str, Any]]) -> None:
    data = {**header, "shards": [shards[k] for k in sorted(shards)]}
    tmp = folder / (MANIFEST + _TMP_SUFFIX)
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    _fault("manifest-written-tmp")
    os.replace(tmp, folder / MANIFEST)
    _fsync_dir(folder)
    _fault("manifest-written")


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; Windows cannot open a directory)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
            raise BadInputError(f"{folder} is being written by another running run_dataset; wait for it to finish or pick another out_dir") from err
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

    def __init__(self, index: int, start: int, stop: int) -> None:
        self.index, self.start, self.stop = index, start, stop
        self.ok: list[int] = []
        self.failures: list[tuple[str, str]] = []
        self.parts: dict[str, list[np.ndarray]] = {}

    def arrays(self) -> dict[str, np.ndarray]:
        arrays = {key: np.concatenate(values) for key, values in self.parts.items()}
        arrays["index"] = np.asarray(self.ok, dtype=np.int64)
        return arrays


def _compute(
    entries: list[LabelledItem],
    pending: list[int],
    fn: Callable[[torch.Tensor, list[LabelledItem]], Mapping[str, torch.Tensor | np.ndarray]],
    folder: Path,
    load: Callable[[Path], torch.Tensor],
    batch_size: int,
    shard_size: int,
    num_workers: int,
    progress: Callable[[int, int], None] | None,
    done: int,
) -> Iterator[dict[str, Any]]:
    """Compute the pending shards; yield each manifest entry once its file is in place."""
    plan: list[tuple[int, list[int]]] = []
    for k in pending:
        start, stop = k * shard_size, min((k + 1) * shard_size, len(entries))
        plan.extend((k, list(range(b, min(b + batch_size, stop)))) for b in range(start, stop, batch_size))
    if not plan:
        return
    # One loader over the batches of every pending shard: workers start once, and batches
    # come back in order, so a shard is complete when its last batch arrives.
    loader = DataLoader(
        _ItemDataset([e.path for e in entries], load),
        batch_sampler=[positions for _, positions in plan],
        collate_fn=_collate,
        num_workers=num_workers,
    )
    keys: set[str] | None = None
    buffer: _ShardBuffer | None = None
    for (k, positions), batch in zip(plan, loader):
        if buffer is None:
            buffer = _ShardBuffer(k, k * shard_size, min((k + 1) * shard_size, len(entries)))
        buffer.failures.extend((str(entries[i].path), reason) for i, reason in batch.failures)
        if batch.indices:
            outputs = _call(fn, batch, entries, keys)
            keys = set(outputs)
            for key, value in outputs.items():
                buffer.parts.setdefault(key, []).append(value)
            buffer.ok.extend(batch.indices)
        done += len(positions)
        if progress is not None:
            progress(done, len(entries))
        if positions[-1] == buffer.stop - 1:
            yield _finish(folder, buffer)
            buffer = None


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
        raise TypeError(f"fn must return a mapping of name -> tensor or array, got {type(outputs).__name__}")
    if keys is not None and set(outputs) != keys:
        raise BadInputError(f"fn returned keys {sorted(outputs)} after {sorted(keys)}; return the same keys for every batch")
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
        raise BadInputError(f"fn returned the key {key!r}; use non-empty names without '/', other than 'index'")
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.dtype == torch.bfloat16:
            value = value.float()  # numpy has no bfloat16
        array = value.numpy().copy()
    elif isinstance(value, np.ndarray):
        array = value.copy()  # fn may reuse its buffer for the next batch
    else:
        raise TypeError(f"fn returned {type(value).__name__} for {key!r}; return a tensor or numpy array")
    if array.dtype.hasobject:
        raise TypeError(f"fn returned an object array for {key!r}; return numeric arrays")
    if array.ndim == 0 or array.shape[0] != n:
        raise BadInputError(f"fn returned {key!r} with shape {array.shape} for a batch of {n} items; return one row per item")
    return array


def _finish(folder: Path, buffer: _ShardBuffer) -> dict[str, Any]:
    name = _shard_name(buffer.index)
    digest = _write_npz(folder / name, buffer.arrays())
    return {
        "index": buffer.index,
        "file": name,
        "sha256": digest,
        "start": buffer.start,
        "stop": buffer.stop,
        "n_ok": len(buffer.ok),
        "failures": [list(f) for f in buffer.failures],
    }


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> str:
    """Write ``arrays`` as an .npz atomically; return its sha256."""
    tmp = path.with_name(path.name + _TMP_SUFFIX)
    with open(tmp, "wb") as handle:
        # Written member by member rather than through np.savez, whose own keyword
        # arguments ("file", "allow_pickle") would collide with output names.
        with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
            for key, array in arrays.items():
                with archive.open(f"{key}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)
        handle.flush()
        os.fsync(handle.fileno())
    _fault("shard-written-tmp")
    digest = _sha256_file(tmp)
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    _fault("shard-replaced")
    return digest


def _iter_verified(folder: Path, entries: list[dict[str, Any]]) -> Iterator[tuple[list[int], dict[str, np.ndarray]]]:
    for entry in entries:
        path = folder / entry["file"]
        try:
            data = path.read_bytes()
        except OSError as err:
            raise BadInputError(f"{path} is listed in {MANIFEST} but cannot be read ({err}); rerun run_dataset on {folder} to recompute it") from err
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise BadInputError(f"{path} does not match its checksum in {MANIFEST} (modified or corrupt); rerun run_dataset on {folder} to recompute it")
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
        index = arrays.pop("index").tolist()
        yield index, arrays


def _shard_name(k: int) -> str:
    return f"shard-{k:05d}.npz"


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
