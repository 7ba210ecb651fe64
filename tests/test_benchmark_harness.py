"""benchmarks/harness.py on fake rows: interleaving, medians, ratios, peers, discovery.

Nothing here runs a real benchmark: the timed callables only log their call and advance a
fake clock by a chosen duration, so every median and ratio is known exactly.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def harness() -> Iterator[ModuleType]:
    """Import benchmarks/harness.py the way run.py does (benchmarks/ on sys.path), then clean up."""
    sys.path.insert(0, str(BENCHMARKS))
    before = set(sys.modules)
    try:
        import harness as module

        yield module
    finally:
        sys.path.remove(str(BENCHMARKS))
        for name in set(sys.modules) - before:
            if name == "harness" or name == "rows" or name.startswith("rows."):
                del sys.modules[name]


class FakeClock:
    """A clock that only moves when a fake callable says it took some time."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Ctx:
    batch_size = 4


def fake(
    clock: FakeClock,
    log: list[str],
    label: str,
    durations: Sequence[float] = (),
    output: Any = None,
) -> Callable[[Any], Callable[[], Any]]:
    """A setup whose callable logs ``label`` and advances ``clock`` by the next duration."""
    queue = list(durations)

    def setup(ctx: Any) -> Callable[[], Any]:
        def fn() -> Any:
            log.append(label)
            clock.now += queue.pop(0) if queue else 0.0
            return output

        return fn

    return setup


def test_floor_row_and_peers_run_round_robin_after_warmup(harness: ModuleType) -> None:
    clock, log = FakeClock(), []
    row = harness.BenchRow(
        "r",
        "g",
        fake(clock, log, "row"),
        peers=[
            harness.PeerSetting("torch", {"s": 1}, fake(clock, log, "p1")),
            harness.PeerSetting("torch", {"s": 2}, fake(clock, log, "p2")),
        ],
    )
    result = harness.run_row(
        row,
        Ctx(),
        fake(clock, log, "floor"),
        repeats=3,
        warmup=2,
        clock=clock,
        measure_memory=False,
    )
    # 2 warm-up rounds then 3 timed rounds, each in the order floor, row, peer 1, peer 2;
    # timing all floor calls first, or skipping the warm-up, fails here
    assert log == ["floor", "row", "p1", "p2"] * 5
    assert [len(m.times) for m in (result.floor, result.own, *result.peers)] == [3, 3, 3, 3]
    assert result.batch_size == 4


def test_medians_ratios_and_best_peer_from_known_durations(harness: ModuleType) -> None:
    clock, log = FakeClock(), []
    warm = [999.0, 999.0]  # warm-up calls take "999 s": none of that may reach a median
    floor = fake(clock, log, "floor", [*warm, 10, 10, 1000, 10, 11, 9, 10])  # median 10, mean 151
    row = harness.BenchRow(
        "r",
        "g",
        fake(clock, log, "row", [*warm, 30, 29, 31, 30, 300, 30, 28]),  # median 30
        peers=[
            harness.PeerSetting(
                "torch", {"speed": "slow"}, fake(clock, log, "slow", warm + [60] * 7)
            ),
            harness.PeerSetting(
                "torch",
                {"speed": "fast"},
                fake(clock, log, "fast", [*warm, 20, 21, 19, 20, 20, 500, 20]),
            ),
        ],
    )
    result = harness.run_row(
        row, Ctx(), floor, repeats=7, warmup=2, clock=clock, measure_memory=False
    )
    assert result.floor.times == [10, 10, 1000, 10, 11, 9, 10]
    assert result.floor.median == 10
    assert result.own.median == 30
    assert result.ratio_to_floor == pytest.approx(3.0)
    assert result.best_peer is result.peers[1]
    assert result.best_peer.settings == {"speed": "fast"}
    assert result.ratio_to_peer == pytest.approx(1.5)
    assert result.error is None


def test_median_and_ratio_helpers(harness: ModuleType) -> None:
    assert harness.median([4.0, 1.0, 3.0, 2.0]) == 2.5
    assert harness.median([5.0, 1.0, 100.0]) == 5.0
    assert harness.ratio(3.0, 2.0) == 1.5
    assert harness.ratio(None, 2.0) is None
    assert harness.ratio(3.0, 0.0) is None
    # quartiles 2 and 4 of 1..5 (inclusive method), median 3
    assert harness.spread([5.0, 1.0, 4.0, 2.0, 3.0]) == pytest.approx(2 / 3)
    assert harness.spread([7.0, 7.0, 7.0]) == 0.0
    with pytest.raises(ValueError, match="repeats"):
        harness.median([])
    with pytest.raises(ValueError, match="repeats=0"):
        harness.time_interleaved([lambda: None], 0)


def test_missing_or_failing_peers_are_reported_not_raised(harness: ModuleType) -> None:
    clock, log = FakeClock(), []

    def broken_setup(ctx: Any) -> Callable[[], Any]:
        raise RuntimeError("peer API changed")

    def fails_when_called(ctx: Any) -> Callable[[], Any]:
        def fn() -> None:
            raise ValueError("bad shape")

        return fn

    row = harness.BenchRow(
        "r",
        "g",
        fake(clock, log, "row", [1.0] * 4),
        peers=[
            harness.PeerSetting(
                "nolib", {}, fake(clock, log, "never"), package="convlens_no_such_peer_pkg"
            ),
            harness.PeerSetting("torch", {"a": 1}, broken_setup),
            harness.PeerSetting("torch", {"a": 2}, fails_when_called),
        ],
    )
    result = harness.run_row(
        row,
        Ctx(),
        fake(clock, log, "floor", [2.0] * 4),
        repeats=3,
        warmup=1,
        clock=clock,
        measure_memory=False,
    )
    statuses = [p.status for p in result.peers]
    assert statuses[0] == "not installed"
    assert statuses[1] == "error: RuntimeError: peer API changed"
    assert statuses[2] == "error: ValueError: bad shape"
    assert "never" not in log
    assert result.best_peer is None and result.ratio_to_peer is None
    assert result.ratio_to_floor == pytest.approx(0.5)
    report = harness.format_report([result], {"threads": 2})
    assert "nolib: not installed" in report and "peer API changed" in report


def test_failing_row_is_an_error_result(harness: ModuleType) -> None:
    clock, log = FakeClock(), []

    def broken(ctx: Any) -> Callable[[], Any]:
        raise KeyError("blocks.99")

    result = harness.run_row(
        harness.BenchRow("r", "g", broken),
        Ctx(),
        fake(clock, log, "floor"),
        repeats=2,
        clock=clock,
        measure_memory=False,
    )
    assert result.error == "r: error: KeyError: 'blocks.99'"
    assert result.own.times == [] and result.ratio_to_floor is None
    assert "error: KeyError" in harness.format_report([result], {})


def test_peer_output_is_compared_with_the_row(harness: ModuleType) -> None:
    clock, log = FakeClock(), []
    own = torch.tensor([[1.0, -4.0], [2.0, 0.5]])
    same = own.clone()
    off = own.clone()
    off[1, 1] += 0.02  # max |diff| 0.02 over max |own| 4 -> 0.005
    row = harness.BenchRow(
        "r",
        "g",
        fake(clock, log, "row", output=own),
        peers=[
            harness.PeerSetting("torch", {"k": "same"}, fake(clock, log, "p1", output=same)),
            harness.PeerSetting("torch", {"k": "off"}, fake(clock, log, "p2", output=off)),
            harness.PeerSetting("torch", {"k": "shape"}, fake(clock, log, "p3", output=own[0])),
        ],
    )
    result = harness.run_row(
        row,
        Ctx(),
        fake(clock, log, "floor"),
        repeats=1,
        warmup=1,
        clock=clock,
        measure_memory=False,
    )
    assert [p.difference for p in result.peers] == [0.0, pytest.approx(0.005), None]


def test_interleaved_timing_gives_each_callable_its_own_durations(harness: ModuleType) -> None:
    clock, log = FakeClock(), []
    fns = [
        fake(clock, log, name, durations)(None)
        for name, durations in (("a", [1, 2, 3]), ("b", [10, 20, 30]))
    ]
    assert harness.time_interleaved(fns, 3, clock=clock) == [[1, 2, 3], [10, 20, 30]]
    assert log == ["a", "b"] * 3


def _write_package(root: Path, name: str, modules: dict[str, str]) -> None:
    pkg = root / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for module, body in modules.items():
        (pkg / f"{module}.py").write_text(textwrap.dedent(body))


def _rows_module(*names: str) -> str:
    body = "from harness import BenchRow\nROWS = ["
    body += ", ".join(f"BenchRow({n!r}, 'g', lambda ctx: (lambda: None))" for n in names)
    return body + "]\n"


@pytest.fixture
def package_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, harness: ModuleType
) -> Iterator[Path]:
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if name.startswith("fake_rows"):
            del sys.modules[name]


def test_discovery_collects_every_module_floor_first(
    harness: ModuleType, package_root: Path
) -> None:
    _write_package(
        package_root,
        "fake_rows_ok",
        {
            "attribution": _rows_module("gradcam", "ig"),
            "floor": _rows_module("the floor"),
            "zoo": _rows_module("z"),
            "_shared": "HELPER = 1\n",  # helper module: no ROWS needed, not scanned
        },
    )
    rows = harness.discover_rows("fake_rows_ok")
    assert [r.name for r in rows] == ["the floor", "gradcam", "ig", "z"]
    assert all(isinstance(r, harness.BenchRow) for r in rows)


def test_discovery_refuses_a_module_without_rows_and_duplicates(
    harness: ModuleType, package_root: Path
) -> None:
    _write_package(package_root, "fake_rows_norows", {"a": "X = 1\n"})
    with pytest.raises(TypeError, match=r"fake_rows_norows\.a must define ROWS"):
        harness.discover_rows("fake_rows_norows")
    _write_package(
        package_root, "fake_rows_dupes", {"a": _rows_module("same"), "b": _rows_module("same")}
    )
    with pytest.raises(ValueError, match="g/same"):
        harness.discover_rows("fake_rows_dupes")


def test_select_rows_by_pattern(harness: ModuleType) -> None:
    rows = [
        harness.BenchRow(n, g, lambda ctx: lambda: None)
        for g, n in [
            ("inspect", "input_gradient"),
            ("inspect", "layer_activations"),
            ("floor", "floor"),
        ]
    ]
    assert [r.name for r in harness.select_rows(rows, "GRADIENT")] == ["input_gradient"]
    assert [r.name for r in harness.select_rows(rows, "^inspect/")] == [
        "input_gradient",
        "layer_activations",
    ]
    assert len(harness.select_rows(rows, None)) == 3
    with pytest.raises(ValueError, match="not a regular expression"):
        harness.select_rows(rows, "(")


def test_run_benchmarks_covers_every_row_at_every_batch_size(harness: ModuleType) -> None:
    clock, log = FakeClock(), []

    class Sized:
        def __init__(self, n: int) -> None:
            self.batch_size = n

    rows = [harness.BenchRow(n, "g", fake(clock, log, n)) for n in ("a", "b")]
    results = harness.run_benchmarks(
        rows,
        {1: Sized(1), 8: Sized(8)},
        fake(clock, log, "floor"),
        repeats=1,
        warmup=0,
        clock=clock,
        measure_memory=False,
    )
    assert [(r.name, r.batch_size) for r in results] == [("a", 1), ("b", 1), ("a", 8), ("b", 8)]
    table = harness.format_report(results, {})
    assert table.count("| a ") == 2 and "## g" in table


def test_the_real_rows_register_without_running(harness: ModuleType) -> None:
    rows = harness.discover_rows("rows")
    keys = [r.key for r in rows]
    assert keys[0].startswith("floor/floor")
    assert {
        "inspect/input_gradient",
        "inspect/loss_layer_gradients",
        "inspect/layer_activations",
    } <= set(keys)
    saliency = next(r for r in rows if r.name == "input_gradient")
    assert {p.library for p in saliency.peers} == {"captum"}


def test_peak_memory_counts_what_a_call_touches(harness: ModuleType) -> None:
    import numpy as np

    def allocate() -> float:
        return float(np.ones(25_000_000).sum())  # 200 MB, touched

    peak = harness.peak_memory_mb(allocate)
    if peak is None:
        pytest.skip("/proc/self/clear_refs is not writable here")
    assert 150 < peak < 400
    assert harness.peak_memory_mb(lambda: None) < 20
