"""The benchmark harness: rows that register themselves, interleaved timing, ratios, tables.

DESIGN.md "Performance": every row is timed side by side with the floor
(``torch.autograd.grad(score, x)``, parameters frozen, same batch size) and with every
setting of its peers (Captum, pytorch-grad-cam, torchattacks), round-robin in one process,
and reported as medians and ratios. Machines are noisy (about 15 % between processes), so
only ratios measured side by side count; absolute milliseconds are for orientation.

A row is a :class:`BenchRow` in the ``ROWS`` list of any module of ``benchmarks/rows/``;
:func:`discover_rows` finds them, so adding a benchmark means adding a file.

This module is a script helper, not part of the installed package; it imports torch and
convlens lazily so its logic can be tested on fake rows.
"""

from __future__ import annotations

import gc
import importlib
import importlib.metadata
import importlib.util
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import ModuleType
from typing import Any

__all__ = [
    "BenchRow",
    "Context",
    "Measurement",
    "PeerSetting",
    "RowResult",
    "SetupFn",
    "discover_rows",
    "format_report",
    "machine_facts",
    "make_contexts",
    "markdown_table",
    "median",
    "peak_memory_mb",
    "ratio",
    "relative_difference",
    "run_benchmarks",
    "run_row",
    "select_rows",
    "spread",
    "time_interleaved",
]

Clock = Callable[[], float]


@dataclass(frozen=True)
class Context:
    """What a row's setup gets: the model and a batch of real photos at one batch size.

    ``x`` is the input-space batch ``(batch_size, C, H, W)`` (the labelled photos repeated
    to fill the batch) and ``classes`` the model's top-1 class of each image ``(batch_size,)``.
    Setups must not modify ``x`` in place: the floor and every other row share it.
    """

    model: Any  # convlens.Model
    x: Any  # torch.Tensor
    classes: Any  # torch.Tensor of int64
    batch_size: int
    threads: int
    sources: tuple[str, ...] = ()


#: ``setup(ctx) -> fn``: untimed preparation returning the zero-argument callable to time.
SetupFn = Callable[[Any], Callable[[], Any]]


@dataclass(frozen=True)
class PeerSetting:
    """One setting of a peer library for a row (the harness keeps the fastest setting).

    Parameters
    ----------
    library
        Display name (``"captum"``, ``"pytorch-grad-cam"``, ``"torchattacks"``).
    settings
        What this setting chooses, printed beside the timing.
    setup
        ``setup(ctx) -> fn``, importing the peer inside (so a missing peer is no error).
    package
        Import name to look for (default ``library``); if absent the peer is reported
        as "not installed".
    """

    library: str
    settings: Mapping[str, Any]
    setup: SetupFn
    package: str | None = None

    @property
    def import_name(self) -> str:
        return (self.package or self.library).split(".")[0]

    @property
    def installed(self) -> bool:
        return importlib.util.find_spec(self.import_name) is not None

    def describe(self) -> str:
        return f"{self.library} {format_settings(self.settings)}".strip()


@dataclass(frozen=True)
class BenchRow:
    """One benchmark row: a convlens call timed against the floor and its peers.

    Parameters
    ----------
    name
        What is timed, as printed (unique within ``group``).
    group
        The table the row is printed in.
    setup
        ``setup(ctx) -> fn``; the setup is untimed, ``fn()`` is timed.
    peers
        Settings of peer libraries computing the same thing; the fastest one is reported.
    settings
        convlens's own settings, printed beside the peer's.
    floor, floor_name
        Another floor for rows that are not one gradient (say ``k`` gradient steps);
        default: the gradient floor given to :func:`run_benchmarks`.
    """

    name: str
    group: str
    setup: SetupFn
    peers: list[PeerSetting] = field(default_factory=list)
    settings: Mapping[str, Any] = field(default_factory=dict)
    floor: SetupFn | None = None
    floor_name: str | None = None

    @property
    def key(self) -> str:
        return f"{self.group}/{self.name}"


@dataclass
class Measurement:
    """Timings of one callable (the floor, the row or one peer setting), in seconds."""

    label: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    status: str = "ok"  # "ok", "not installed" or "error: ..."
    times: list[float] = field(default_factory=list)
    difference: float | None = None  # max |peer - row| / max |row|, when comparable
    peak_mb: float | None = (
        None  # resident-memory high-water mark of one call over the memory before it
    )

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def median(self) -> float | None:
        return median(self.times) if self.times else None

    @property
    def spread(self) -> float | None:
        """Interquartile range over the median: this callable's noise in this run."""
        return spread(self.times) if len(self.times) >= 2 else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "settings": {k: _jsonable(v) for k, v in self.settings.items()},
            "status": self.status,
            "median_s": self.median,
            "spread": self.spread,
            "times_s": list(self.times),
            "relative_difference": self.difference,
            "peak_mb": self.peak_mb,
        }


@dataclass
class RowResult:
    """A row at one batch size: its timing, the floor's and its peers', side by side."""

    name: str
    group: str
    batch_size: int
    own: Measurement
    floor: Measurement
    peers: list[Measurement] = field(default_factory=list)
    floor_name: str | None = None

    @property
    def error(self) -> str | None:
        """The first error among the row and its floor (peers' errors are their own)."""
        for m in (self.floor, self.own):
            if not m.ok:
                return f"{m.label}: {m.status}"
        return None

    @property
    def ratio_to_floor(self) -> float | None:
        return ratio(self.own.median, self.floor.median)

    @property
    def best_peer(self) -> Measurement | None:
        """The fastest peer setting that ran, or None."""
        timed = [p for p in self.peers if p.ok and p.times]
        return min(timed, key=lambda p: p.median or 0.0) if timed else None

    @property
    def ratio_to_peer(self) -> float | None:
        best = self.best_peer
        return ratio(self.own.median, best.median) if best else None

    def to_dict(self) -> dict[str, Any]:
        best = self.best_peer
        return {
            "name": self.name,
            "group": self.group,
            "batch_size": self.batch_size,
            "floor_name": self.floor_name or "gradient floor",
            "own": self.own.to_dict(),
            "floor": self.floor.to_dict(),
            "peers": [p.to_dict() for p in self.peers],
            "ratio_to_floor": self.ratio_to_floor,
            "best_peer": best.label if best else None,
            "ratio_to_peer": self.ratio_to_peer,
            "error": self.error,
        }


# -- statistics ------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    """The median (the middle value, or the mean of the two middle ones)."""
    if not values:
        raise ValueError("median of no timings: time at least one round (repeats >= 1)")
    return float(statistics.median(values))


def spread(values: Sequence[float]) -> float:
    """``(Q3 - Q1) / median``: how much the timings of one callable scatter (0 = not at all)."""
    if len(values) < 2:
        raise ValueError("the spread needs at least two timings")
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    mid = median(values)
    return (q3 - q1) / mid if mid > 0 else 0.0


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, or None when either side is missing or the floor is 0."""
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def relative_difference(a: Any, b: Any) -> float | None:
    """``max |a - b| / max |b|`` for two tensors of one shape, else None (not comparable)."""
    import torch

    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.shape != b.shape:
        return None
    a64, b64 = a.detach().double().cpu(), b.detach().double().cpu()
    diff = float((a64 - b64).abs().max()) if a64.numel() else 0.0
    scale = float(b64.abs().max()) if b64.numel() else 0.0
    return diff / scale if scale > 0 else diff


# -- timing ----------------------------------------------------------------------------


def time_interleaved(
    fns: Sequence[Callable[[], Any]], repeats: int, clock: Clock = time.perf_counter
) -> list[list[float]]:
    """Time each callable ``repeats`` times, round-robin: ``f0, f1, ..., f0, f1, ...``.

    Interleaving spreads slow drifts of a shared machine (other jobs, frequency, heat)
    over all callables alike, so their ratios stay meaningful when the absolute times do
    not. The cyclic garbage collector is off during the rounds, as in ``timeit``.
    """
    if repeats < 1:
        raise ValueError(f"repeats={repeats}: time at least one round")
    times: list[list[float]] = [[] for _ in fns]
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            for slot, fn in zip(times, fns):
                start = clock()
                result = fn()
                slot.append(clock() - start)
                del result
    finally:
        if gc_was_enabled:
            gc.enable()
    return times


def _error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"error: {type(exc).__name__}: {first[:160]}".rstrip(": ")


def _setup_peer(peer: PeerSetting, ctx: Any) -> tuple[Measurement, Callable[[], Any] | None]:
    m = Measurement(peer.library, dict(peer.settings))
    if not peer.installed:
        m.status = "not installed"
        return m, None
    try:
        return m, peer.setup(ctx)
    except ModuleNotFoundError as exc:
        # a missing optional part of the peer counts as "not installed", our own bugs do not
        if (exc.name or "").split(".")[0] == peer.import_name:
            m.status = "not installed"
        else:
            m.status = _error(exc)
    except Exception as exc:
        m.status = _error(exc)
    return m, None


def run_row(
    row: BenchRow,
    ctx: Any,
    floor: SetupFn,
    *,
    repeats: int = 7,
    warmup: int = 2,
    clock: Clock = time.perf_counter,
    measure_memory: bool = True,
) -> RowResult:
    """Time ``row`` at one batch size: floor, row and each peer setting, interleaved.

    Every callable is set up (untimed), called ``warmup`` times, called once more to measure
    its peak memory (:func:`peak_memory_mb`), then timed for ``repeats`` round-robin rounds.
    A peer that is missing or fails is reported, not raised; so is a
    failing row (its result carries the error).
    """
    floor_m = Measurement(row.floor_name or "floor")
    own = Measurement(row.name, dict(row.settings))
    result = RowResult(
        row.name, row.group, _batch_size(ctx), own, floor_m, floor_name=row.floor_name
    )
    candidates: list[tuple[Measurement, Callable[[], Any]]] = []
    for m, setup in ((floor_m, row.floor or floor), (own, row.setup)):
        try:
            candidates.append((m, setup(ctx)))
        except Exception as exc:
            m.status = _error(exc)
    if len(candidates) < 2:
        return result
    for peer in row.peers:
        m, fn = _setup_peer(peer, ctx)
        result.peers.append(m)
        if fn is not None:
            candidates.append((m, fn))

    # warm-up (also the outputs compared with the peers'), dropping whatever fails
    outputs: dict[int, Any] = {}
    keep_outputs = bool(row.peers)
    for _ in range(warmup):
        for m, fn in candidates:
            if not m.ok:
                continue
            try:
                out = fn()
            except Exception as exc:
                m.status = _error(exc)
                continue
            if keep_outputs:
                outputs[id(m)] = out
    if not (floor_m.ok and own.ok):
        return result
    alive = [(m, fn) for m, fn in candidates if m.ok]
    if measure_memory:
        for m, fn in alive:
            m.peak_mb = peak_memory_mb(fn)
    gc.collect()
    for (m, _), times in zip(alive, time_interleaved([fn for _, fn in alive], repeats, clock)):
        m.times = times
    for m in result.peers:
        if m.ok and id(m) in outputs and id(own) in outputs:
            m.difference = relative_difference(outputs[id(m)], outputs[id(own)])
    return result


def _rss_kb(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _release_free_memory() -> None:
    """Return the C heap's free pages to the system (glibc only; a no-op elsewhere)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_memory_mb(fn: Callable[[], Any]) -> float | None:
    """How far one call of ``fn`` raises the process's resident memory, in MB (Linux only).

    The kernel's high-water mark ``VmHWM`` is reset to the current resident size
    (``echo 5 > /proc/self/clear_refs``), ``fn`` runs, and the result is the new mark minus
    the resident size before the call: the peak of what the call allocated and touched,
    model and inputs excluded. Free memory the allocator kept from earlier calls is handed
    back to the system first (glibc ``malloc_trim``), so the call's own allocations count;
    what the allocator still keeps is not counted, so this is a lower bound. None where
    ``/proc`` does not allow it.
    """
    gc.collect()
    _release_free_memory()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    before = _rss_kb("VmRSS")
    fn()
    peak = _rss_kb("VmHWM")
    if before is None or peak is None:
        return None
    return max(0.0, (peak - before) / 1024)


def _batch_size(ctx: Any) -> int:
    return int(getattr(ctx, "batch_size", 0))


def run_benchmarks(
    rows: Sequence[BenchRow],
    contexts: Mapping[int, Any],
    floor: SetupFn,
    *,
    repeats: int = 7,
    warmup: int = 2,
    clock: Clock = time.perf_counter,
    progress: Callable[[int, int, str], None] | None = None,
    measure_memory: bool = True,
    on_result: Callable[[RowResult], None] | None = None,
) -> list[RowResult]:
    """Run every row at every batch size (``contexts`` maps batch size to its context);
    ``on_result`` sees each row's result as soon as it is measured."""
    results: list[RowResult] = []
    total = len(rows) * len(contexts)
    for batch_size, ctx in contexts.items():
        for row in rows:
            if progress is not None:
                progress(len(results), total, f"{row.key} @ batch {batch_size}")
            results.append(
                run_row(
                    row,
                    ctx,
                    floor,
                    repeats=repeats,
                    warmup=warmup,
                    clock=clock,
                    measure_memory=measure_memory,
                )
            )
            if on_result is not None:
                on_result(results[-1])  # e.g. print it, so a run stopped early keeps its rows
    if progress is not None:
        progress(total, total, "done")
    return results


# -- discovery -------------------------------------------------------------------------


def discover_rows(
    package: ModuleType | str = "rows", first: Sequence[str] = ("floor",)
) -> list[BenchRow]:
    """Import every module of ``package`` and collect their ``ROWS`` lists.

    Modules named in ``first`` come first, the rest in name order. Modules whose names
    start with ``_`` are helpers and skipped; any other module must define
    ``ROWS: list[BenchRow]``. Two rows with one ``group/name`` are refused.
    """
    pkg = importlib.import_module(package) if isinstance(package, str) else package
    if not hasattr(pkg, "__path__"):
        raise TypeError(
            f"{pkg.__name__} is a module, not a package: rows live in a folder of modules"
        )
    from convlens.discovery import submodule_names

    names = submodule_names(pkg)
    names.sort(key=lambda n: (list(first).index(n) if n in first else len(first), n))
    rows: list[BenchRow] = []
    for name in names:
        module = importlib.import_module(f"{pkg.__name__}.{name}")
        found = getattr(module, "ROWS", None)
        if not isinstance(found, list) or not all(isinstance(r, BenchRow) for r in found):
            raise TypeError(
                f"benchmark module {module.__name__} must define ROWS: list[BenchRow] (put helpers in a module named _{name}.py)"
            )
        rows.extend(found)
    seen: set[str] = set()
    for row in rows:
        if row.key in seen:
            raise ValueError(f"two benchmark rows are named {row.key!r}; give one another name")
        seen.add(row.key)
    return rows


def select_rows(rows: Sequence[BenchRow], pattern: str | None) -> list[BenchRow]:
    """The rows whose ``group/name`` matches the regular expression ``pattern`` (any case)."""
    if not pattern:
        return list(rows)
    try:
        regex = re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        raise ValueError(
            f"--only {pattern!r} is not a regular expression ({exc}); try a plain word such as 'gradient'"
        ) from exc
    return [row for row in rows if regex.search(row.key)]


# -- inputs and machine facts ----------------------------------------------------------


def make_contexts(
    model: Any, batch_sizes: Sequence[int], threads: int, photos: Sequence[str] | None = None
) -> dict[int, Context]:
    """One context per batch size: the labelled bundled photos, repeated to fill the batch.

    The classes are the model's own top-1 predictions (computed once, untimed), so class
    targets need no extra forward pass in any row.
    """
    import torch

    from convlens.data.samples import load_sample, sample_names

    names = list(photos) if photos is not None else sample_names(labelled_only=True)
    # uint8 (H, W, 3) -> [0, 1] (3, H, W) -> the model's own resize, crop and normalisation
    # (what Model.prepare does with an image, without needing the image-file readers)
    pixels = [
        model.preprocessing.to_pixels(torch.tensor(load_sample(n)).permute(2, 0, 1).float() / 255)[
            0
        ]
        for n in names
    ]
    x_all = model.normalize(torch.stack(pixels).to(model.device, model.dtype))
    classes = model.logits(x_all).argmax(dim=1)
    contexts = {}
    for n in batch_sizes:
        idx = [i % len(names) for i in range(n)]
        contexts[n] = Context(
            model=model,
            x=x_all[idx].contiguous(),
            classes=classes[idx].contiguous(),
            batch_size=n,
            threads=threads,
            sources=tuple(names[i] for i in idx),
        )
    return contexts


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(import_name: str) -> str | None:
    dists = importlib.metadata.packages_distributions().get(import_name, [import_name])
    for dist in dists:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def machine_facts(threads: int, peers: Sequence[str] = (), **extra: Any) -> dict[str, Any]:
    """Where and how the run happened: date, CPU, threads, library versions, options."""
    import torch

    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    facts: dict[str, Any] = {
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": affinity,
        "threads": threads,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "convlens": _version("convlens")
        or getattr(sys.modules.get("convlens"), "__version__", None),
    }
    if hasattr(os, "getloadavg"):
        facts["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)  # other jobs on the machine
    for name in sorted(set(peers)):
        facts[name] = _version(name) or "not installed"
    facts.update(extra)
    return facts


# -- output ----------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)


def format_settings(settings: Mapping[str, Any]) -> str:
    """``{"abs": False}`` -> ``abs=False`` (what a setting chose, compactly)."""
    return ", ".join(f"{k}={v}" for k, v in settings.items())


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    ms = seconds * 1e3
    return f"{ms:.1f}" if ms >= 10 else f"{ms:.2f}"


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def markdown_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()
) -> str:
    """An aligned Markdown pipe table (reads as plain text and renders in the README)."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]

    def line(cells: Sequence[str]) -> str:
        padded = [
            str(c).rjust(w) if i in right else str(c).ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|"
        + "|".join(
            ("-" * (w + 1) + ":") if i in right else ("-" * (w + 2)) for i, w in enumerate(widths)
        )
        + "|"
    )
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


_HEADER = (
    "row",
    "batch",
    "convlens settings",
    "ms",
    "spread",
    "x floor",
    "floor ms",
    "peak MB",
    "floor MB",
    "best peer (settings)",
    "peer ms",
    "x peer",
    "peer diff",
    "peer MB",
)


def _cells(r: RowResult) -> list[str]:
    name = r.name if not r.floor_name else f"{r.name} [floor: {r.floor_name}]"
    if r.error:
        return [name, str(r.batch_size), format_settings(r.own.settings), r.error, *["-"] * 10]
    best = r.best_peer
    if best is not None:
        peer = f"{best.label} ({format_settings(best.settings)})"
        diff = (
            "-"
            if best.difference is None
            else ("0" if best.difference == 0 else f"{best.difference:.0e}")
        )
    else:
        statuses = sorted({f"{p.label}: {p.status}" for p in r.peers})
        peer, diff = ("; ".join(statuses) if statuses else "none"), "-"
    return [
        name,
        str(r.batch_size),
        format_settings(r.own.settings) or "-",
        _ms(r.own.median),
        _pct(r.own.spread),
        _x(r.ratio_to_floor),
        _ms(r.floor.median),
        _mb(r.own.peak_mb),
        _mb(r.floor.peak_mb),
        peer,
        _ms(best.median if best else None),
        _x(r.ratio_to_peer),
        diff,
        _mb(best.peak_mb if best else None),
    ]


def _sweep_lines(results: Sequence[RowResult]) -> list[str]:
    lines = []
    for r in results:
        for p in r.peers:
            label = f"{p.label} ({format_settings(p.settings)})"
            shown = (
                f"{_ms(p.median)} ms (spread {_pct(p.spread)}), x floor {_x(ratio(p.median, r.floor.median))}, peak {_mb(p.peak_mb)} MB"
                if p.ok and p.times
                else p.status
            )
            mark = " <- best" if p is r.best_peer else ""
            lines.append(f"- {r.name} @ {r.batch_size}: {label}: {shown}{mark}")
    return lines


def format_report(results: Sequence[RowResult], facts: Mapping[str, Any]) -> str:
    """Machine facts, then one table per group (in the order rows were given), then peer sweeps."""
    parts = ["## Machine", "", *(f"- {k}: {v}" for k, v in facts.items()), ""]
    groups: dict[str, list[RowResult]] = {}
    for r in results:
        groups.setdefault(r.group, []).append(r)
    for group, members in groups.items():
        members = sorted(
            members, key=lambda r: r.batch_size
        )  # stable: row order within a batch size
        parts += [
            f"## {group}",
            "",
            markdown_table(
                _HEADER, [_cells(r) for r in members], right=(1, 3, 4, 5, 6, 7, 8, 10, 11, 13)
            ),
            "",
        ]
        sweep = _sweep_lines(members)
        if sweep:
            parts += ["Peer settings timed (the sweep):", "", *sweep, ""]
    return "\n".join(parts).rstrip() + "\n"
