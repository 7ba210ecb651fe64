"""Common corruptions and the mean corruption error (ImageNet-C).

Hendrycks & Dietterich 2019, "Benchmarking Neural Network Robustness to Common Corruptions
and Perturbations", ICLR (arXiv:1903.12261). Fifteen corruptions in four families (noise,
blur, weather, digital), each at severities 1-5. For a classifier ``f`` the error on
corruption ``c`` at severity ``s`` is ``E^f_{s,c}``, and

    CE^f_c          = sum_s E^f_{s,c} / sum_s E^AlexNet_{s,c}
    mCE^f           = mean_c CE^f_c
    relative CE^f_c = sum_s (E^f_{s,c} - E^f_clean) / sum_s (E^AlexNet_{s,c} - E^AlexNet_clean)

The corruptions themselves come from ``imagecorruptions-imaug`` (the maintained fork of the
authors' ``imagecorruptions`` package, which re-implements the ImageNet-C code for any
image size); convlens does not re-implement them. That package draws from numpy's global
random state: each call here seeds it from ``(seed, item id, corruption)`` and restores the
caller's state afterwards, so a corrupted image depends only on those numbers and the
severity (not on the batch it is in, nor on what ran before). The seed leaves out the
severity: one image sees the same random draws at every severity (common random numbers),
so its severities differ only in strength. Severity 0 is the identity.

Corruptions act in **pixel space at the model's resolution**: the image is resized and
centre-cropped first, then corrupted (as ImageNet-C did with 224 x 224 crops). The pixels are
rounded to 8 bits before corrupting (the package works on ``uint8`` images) and the
corrupted images are 8-bit too.

The AlexNet errors that normalise the mCE are the authors' published ImageNet-C results for
AlexNet (per corruption and severity; their averages over severities are the values of the
``hendrycks/robustness`` repository, e.g. 0.886428 for Gaussian noise). They are valid only
for **ImageNet validation images**: on any other set of images the "mCE" is a number without
that meaning, and results say so.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from convlens.errors import BadInputError, MissingDependencyError
from convlens.hooks import eval_mode
from convlens.models.model import Model
from convlens.progress import ProgressFn
from convlens.results import Result, make_provenance

__all__ = [
    "ALEXNET_CLEAN_ERROR",
    "ALEXNET_ERRORS",
    "ALEXNET_MEAN_ERRORS",
    "CORRUPTIONS",
    "FAMILIES",
    "CorruptionSummary",
    "corrupt",
    "corruption_predictions",
    "corruption_robustness",
    "item_seed",
    "result_from_predictions",
    "summarize_corruptions",
    "summary_from_predictions",
]


#: the 15 ImageNet-C corruptions, in the paper's order
CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)

#: the paper's four families
FAMILIES: dict[str, tuple[str, ...]] = {
    "noise": CORRUPTIONS[0:3],
    "blur": CORRUPTIONS[3:7],
    "weather": CORRUPTIONS[7:11],
    "digital": CORRUPTIONS[11:15],
}

#: AlexNet's top-1 error on ImageNet-C, per corruption, severities 1-5 (ImageNet validation only)
ALEXNET_ERRORS: dict[str, tuple[float, float, float, float, float]] = {
    "gaussian_noise": (0.69528, 0.82542, 0.93554, 0.98138, 0.99452),
    "shot_noise": (0.71224, 0.85108, 0.93574, 0.98182, 0.99146),
    "impulse_noise": (0.78374, 0.89808, 0.94870, 0.98720, 0.99548),
    "defocus_blur": (0.65624, 0.73202, 0.85036, 0.91364, 0.94714),
    "glass_blur": (0.64308, 0.75054, 0.88806, 0.91622, 0.93344),
    "motion_blur": (0.58430, 0.70048, 0.82108, 0.89750, 0.92638),
    "zoom_blur": (0.70008, 0.76992, 0.80784, 0.84198, 0.87198),
    "snow": (0.71726, 0.88392, 0.86468, 0.91870, 0.94952),
    "frost": (0.61390, 0.79734, 0.88790, 0.89942, 0.93430),
    "fog": (0.67474, 0.76050, 0.84378, 0.87260, 0.94500),
    "brightness": (0.45140, 0.48502, 0.54048, 0.62166, 0.72440),
    "contrast": (0.64548, 0.76150, 0.88874, 0.97760, 0.99270),
    "elastic_transform": (0.52596, 0.70116, 0.55686, 0.64076, 0.80554),
    "pixelate": (0.52218, 0.54620, 0.73728, 0.87092, 0.91262),
    "jpeg_compression": (0.51002, 0.54718, 0.57294, 0.65458, 0.74778),
}

#: AlexNet's error averaged over the 5 severities, as the authors publish it
ALEXNET_MEAN_ERRORS: dict[str, float] = {
    "gaussian_noise": 0.886428,
    "shot_noise": 0.894468,
    "impulse_noise": 0.922640,
    "defocus_blur": 0.819880,
    "glass_blur": 0.826268,
    "motion_blur": 0.785948,
    "zoom_blur": 0.798360,
    "snow": 0.866816,
    "frost": 0.826572,
    "fog": 0.819324,
    "brightness": 0.564592,
    "contrast": 0.853204,
    "elastic_transform": 0.646056,
    "pixelate": 0.717840,
    "jpeg_compression": 0.606500,
}

#: AlexNet's clean top-1 error on the ImageNet validation set (paper, Table 1: 43.5 %)
ALEXNET_CLEAN_ERROR = 0.4348

_INSTALL = "pip install --no-deps imagecorruptions-imaug && pip install numba (--no-deps: the package asks for opencv-python, which would clash with opencv-python-headless)"
_MIN_SIZE = 32  # the package refuses smaller images


def _package() -> Any:
    try:
        import imagecorruptions
    except ImportError as exc:
        raise MissingDependencyError(
            f"corruptions need imagecorruptions-imaug: {_INSTALL} ({exc})"
        ) from exc
    return imagecorruptions


def item_seed(seed: int, item: int, corruption: str) -> int:
    """The numpy seed of one corrupted image: a hash of ``(seed, item, corruption)``.

    The severity is left out on purpose: an image gets the same random draws (the same frost
    picture and crop, the same noise pattern, the same fog) at every severity, so its
    severities differ only in strength, not in luck.
    """
    entropy = [int(seed) & 0xFFFFFFFF, int(item) & 0xFFFFFFFF, CORRUPTIONS.index(corruption)]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


@contextlib.contextmanager
def _numpy_seeded(seed: int) -> Iterator[None]:
    """Seed numpy's global random state for the package, then give the caller's state back."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _check(corruption: str, severity: int) -> None:
    if corruption not in CORRUPTIONS:
        raise BadInputError(
            f"unknown corruption {corruption!r}; choose from {', '.join(CORRUPTIONS)}"
        )
    if (
        isinstance(severity, bool)
        or not isinstance(severity, (int, np.integer))
        or not 0 <= int(severity) <= 5
    ):
        raise BadInputError(f"severity {severity!r}: expected an integer from 0 (none) to 5")


def _corrupt_uint8(image: np.ndarray, corruption: str, severity: int, seed: int) -> np.ndarray:
    """One ``(H, W, 3)`` uint8 image through the package, under a local seed."""
    package = _package()
    # Two corruptions take their own seed (glass blur's pixel shuffle runs in numba, whose
    # random state numpy's seed does not reach; impulse noise uses skimage's generator).
    extra = {"seed": seed} if corruption in ("glass_blur", "impulse_noise") else {}
    with _numpy_seeded(seed):
        out = package.corrupt(image, severity=int(severity), corruption_name=corruption, **extra)
    out = np.asarray(out, dtype=np.uint8)
    if out.shape != image.shape:  # never silently resample behind the user's back
        raise BadInputError(
            f"{corruption} at severity {severity} returned shape {out.shape} for an image of shape {image.shape}"
        )
    return out


def corrupt(
    pixels: torch.Tensor,
    corruption: str,
    severity: int,
    *,
    seed: int = 0,
    items: Sequence[int] | None = None,
) -> torch.Tensor:
    """Corrupt pixel-space images with one ImageNet-C corruption at one severity.

    Parameters
    ----------
    pixels
        ``(C, H, W)`` or ``(N, C, H, W)`` in [0, 1], C = 1 or 3, H and W >= 32 (the model's
        input resolution: crop first, then corrupt).
    corruption
        One of :data:`CORRUPTIONS`.
    severity
        0 (the identity: ``pixels`` is returned unchanged) to 5.
    seed
        Base seed. Image ``i`` uses :func:`item_seed` ``(seed, items[i], corruption)`` (the same
        draws at every severity).
    items
        Stable ids of the images (default ``0 .. N-1``), so an image is corrupted the same
        way in any batch.

    Returns
    -------
    torch.Tensor
        The corrupted images, shaped, typed and placed like ``pixels``, on the 8-bit grid
        (severity 0: ``pixels`` itself, not quantised).

    Examples
    --------
    >>> fogged = corrupt(model.denormalize(model.prepare("sample:cat").x), "fog", 3)
    """
    _check(corruption, severity)
    if not isinstance(pixels, torch.Tensor) or pixels.dim() not in (3, 4):
        raise BadInputError("pixels: expected a tensor (C, H, W) or (N, C, H, W) in [0, 1]")
    batch = pixels if pixels.dim() == 4 else pixels[None]
    n, c, h, w = batch.shape
    if c not in (1, 3):
        raise BadInputError(f"pixels with {c} channels: corruptions need 1 (grey) or 3 (RGB)")
    if min(h, w) < _MIN_SIZE:
        raise BadInputError(
            f"images of {h}x{w}: the ImageNet-C corruptions need at least {_MIN_SIZE}x{_MIN_SIZE} pixels"
        )
    ids = list(range(n)) if items is None else [int(i) for i in items]
    if len(ids) != n:
        raise BadInputError(f"{len(ids)} item ids for {n} images; pass one id per image")
    if severity == 0:
        return pixels
    data = batch.detach().to("cpu", torch.float32)
    low, high = torch.aminmax(data)
    if not (float(low) >= 0 and float(high) <= 1):  # also catches NaN (comparisons are False)
        raise BadInputError("pixels must be finite and in [0, 1]")
    images = (data * 255).round_().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
    out = np.empty((n, h, w, 3), dtype=np.uint8)
    for i in range(n):
        rgb = images[i] if c == 3 else np.repeat(images[i], 3, axis=2)
        out[i] = _corrupt_uint8(rgb, corruption, severity, item_seed(seed, ids[i], corruption))
    result = torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255)
    if c == 1:
        # The package works in RGB; a grey model gets the mean of the three (equal for
        # every corruption except the colour ones: frost, fog and snow are tinted slightly).
        result = result.mean(dim=1, keepdim=True)
    result = result.to(pixels.device, pixels.dtype)
    return result if pixels.dim() == 4 else result[0]


# ---------------------------------------------------------------- evaluation


def _severities(severities: Sequence[int]) -> list[int]:
    values = [int(s) for s in severities]
    if not values or any(not 1 <= s <= 5 for s in values) or len(set(values)) != len(values):
        raise BadInputError(
            f"severities {list(severities)!r}: expected distinct integers from 1 to 5"
        )
    return sorted(values)


def _corruptions(corruptions: Sequence[str]) -> list[str]:
    names = list(corruptions)
    if not names or len(set(names)) != len(names):
        raise BadInputError(
            f"corruptions {names!r}: expected distinct names from {', '.join(CORRUPTIONS)}"
        )
    for name in names:
        _check(name, 0)
    return names


def corruption_predictions(
    model: Model,
    pixels: torch.Tensor,
    *,
    corruptions: Sequence[str] = CORRUPTIONS,
    severities: Sequence[int] = (1, 2, 3, 4, 5),
    seed: int = 0,
    items: Sequence[int] | None = None,
    batch_size: int = 32,
    progress: ProgressFn | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-1 classes of clean and corrupted images.

    Parameters
    ----------
    model
        The classifier.
    pixels
        ``(N, C, H, W)`` in [0, 1] at the model's input size.
    corruptions, severities, seed, items
        As :func:`corrupt`.
    batch_size
        Images per forward pass.
    progress
        ``progress(done, total)`` after each corruption and severity.

    Returns
    -------
    (clean, corrupted)
        ``clean`` ``(N,)`` and ``corrupted`` ``(len(corruptions), len(severities), N)``, int64.
    """
    names, levels = _corruptions(corruptions), _severities(severities)
    if (
        not isinstance(pixels, torch.Tensor)
        or pixels.dim() != 4
        or tuple(pixels.shape[1:]) != (model.channels, *model.input_size)
    ):
        shape = tuple(pixels.shape) if isinstance(pixels, torch.Tensor) else type(pixels).__name__
        raise BadInputError(
            f"pixels of shape {shape}: expected (N, {model.channels}, {model.input_size[0]}, {model.input_size[1]}) (model.prepare(...) gives it)"
        )
    if batch_size < 1:
        raise BadInputError(f"batch_size {batch_size}: must be at least 1")

    def top1(images: torch.Tensor) -> torch.Tensor:
        return (
            model.logits(
                model.normalize(images.to(model.device, model.dtype)), batch_size=batch_size
            )
            .argmax(dim=1)
            .cpu()
        )

    total, done = len(names) * len(levels), 0
    out = torch.empty(len(names), len(levels), pixels.shape[0], dtype=torch.int64)
    with eval_mode(model.module):
        clean = top1(pixels)
        for a, name in enumerate(names):
            for b, severity in enumerate(levels):
                out[a, b] = top1(corrupt(pixels, name, severity, seed=seed, items=items))
                done += 1
                if progress is not None:
                    progress(done, total)
    return clean, out


@dataclass(frozen=True)
class CorruptionSummary:
    """Errors of one model on corrupted images, and the ImageNet-C summary numbers.

    Attributes
    ----------
    corruptions, severities
        What was evaluated (rows and columns of ``errors``).
    errors
        ``errors[c][k]``: top-1 error on corruption ``c`` at ``severities[k]``.
    clean_error
        Top-1 error on the uncorrupted images.
    corruption_errors
        Per corruption, the error averaged over the severities.
    mean_corruption_error
        The average of all ``errors`` (not normalised).
    ce, mce
        AlexNet-normalised corruption errors and their mean (needs the 15 canonical
        corruptions for ``mce``; valid only for ImageNet validation images).
    relative_ce, relative_mce
        The same with the clean error subtracted on both sides (None when AlexNet's
        degradation is not positive, which does not happen with the published numbers).
    accuracy_drop
        Clean accuracy minus accuracy on corrupted images, per corruption (averaged over
        severities) and ``"mean"``.
    complete
        True when all 15 corruptions at all 5 severities were measured: only then are
        ``mce`` and ``relative_mce`` the paper's numbers.
    """

    corruptions: tuple[str, ...]
    severities: tuple[int, ...]
    errors: dict[str, list[float]]
    clean_error: float
    corruption_errors: dict[str, float]
    mean_corruption_error: float
    ce: dict[str, float]
    mce: float | None
    relative_ce: dict[str, float | None]
    relative_mce: float | None
    accuracy_drop: dict[str, float]
    complete: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "corruptions": list(self.corruptions),
            "severities": list(self.severities),
            "errors": {k: list(v) for k, v in self.errors.items()},
            "clean_error": self.clean_error,
            "clean_accuracy": 1 - self.clean_error,
            "corruption_errors": dict(self.corruption_errors),
            "mean_corruption_error": self.mean_corruption_error,
            "ce": dict(self.ce),
            "mce": self.mce,
            "relative_ce": dict(self.relative_ce),
            "relative_mce": self.relative_mce,
            "accuracy_drop": dict(self.accuracy_drop),
            "complete": self.complete,
            "mce_note": "mCE is normalised by AlexNet's published ImageNet-C errors: valid only for ImageNet validation images",
        }


def summarize_corruptions(
    errors: Mapping[str, Sequence[float]], severities: Sequence[int], clean_error: float
) -> CorruptionSummary:
    """The ImageNet-C numbers from errors per corruption and severity.

    ``CE_c = sum_s E_{s,c} / sum_s A_{s,c}`` with ``A`` AlexNet's published errors at the same
    severities; ``mCE`` is the mean of ``CE_c`` over the 15 corruptions (None with fewer:
    the paper's mCE averages all 15); relative ``CE_c = sum_s (E_{s,c} - E_clean) /
    sum_s (A_{s,c} - A_clean)``.

    Parameters
    ----------
    errors
        ``{corruption: [error at each severity]}``, errors in [0, 1].
    severities
        The severities of each list's entries.
    clean_error
        The model's error on the clean images.

    Returns
    -------
    CorruptionSummary
    """
    levels = _severities(severities)
    names = _corruptions(list(errors))
    rows: dict[str, list[float]] = {}
    for name in names:
        row = [float(e) for e in errors[name]]
        if len(row) != len(levels) or any(not 0 <= e <= 1 for e in row):
            raise BadInputError(
                f"errors[{name!r}]: expected {len(levels)} errors in [0, 1], got {row}"
            )
        rows[name] = row
    if not 0 <= clean_error <= 1:
        raise BadInputError(f"clean_error {clean_error}: expected a value in [0, 1]")
    ce: dict[str, float] = {}
    relative: dict[str, float | None] = {}
    for name, row in rows.items():
        alex = [ALEXNET_ERRORS[name][s - 1] for s in levels]
        ce[name] = sum(row) / sum(alex)
        degradation = sum(a - ALEXNET_CLEAN_ERROR for a in alex)
        relative[name] = (
            sum(e - clean_error for e in row) / degradation if degradation > 0 else None
        )
    all_corruptions = set(rows) == set(CORRUPTIONS)
    complete = all_corruptions and levels == [1, 2, 3, 4, 5]
    rel_values = [v for v in relative.values() if v is not None]
    per_corruption = {name: sum(row) / len(row) for name, row in rows.items()}
    drop = {name: (1 - clean_error) - (1 - e) for name, e in per_corruption.items()}
    mean_error = sum(per_corruption.values()) / len(per_corruption)
    drop["mean"] = mean_error - clean_error
    return CorruptionSummary(
        corruptions=tuple(names),
        severities=tuple(levels),
        errors=rows,
        clean_error=float(clean_error),
        corruption_errors=per_corruption,
        mean_corruption_error=mean_error,
        ce=ce,
        mce=sum(ce.values()) / len(ce) if all_corruptions else None,
        relative_ce=relative,
        relative_mce=sum(rel_values) / len(rel_values)
        if all_corruptions and len(rel_values) == len(relative)
        else None,
        accuracy_drop=drop,
        complete=complete,
    )


def summary_from_predictions(
    clean: torch.Tensor,
    corrupted: torch.Tensor,
    labels: torch.Tensor,
    corruptions: Sequence[str],
    severities: Sequence[int],
) -> CorruptionSummary:
    """:func:`summarize_corruptions` from top-1 classes (as :func:`corruption_predictions` gives)."""
    labels = torch.as_tensor(labels, dtype=torch.int64).cpu()
    if (
        labels.dim() != 1
        or labels.numel() == 0
        or labels.numel() != clean.numel()
        or corrupted.shape[-1] != labels.numel()
    ):
        raise BadInputError(
            f"{labels.numel()} labels for {clean.numel()} images; pass one label per image"
        )
    clean_error = float((clean.cpu() != labels).double().mean())
    wrong = (corrupted.cpu() != labels).double().mean(dim=-1)  # (corruptions, severities)
    errors = {name: wrong[a].tolist() for a, name in enumerate(corruptions)}
    return summarize_corruptions(errors, severities, clean_error)


def corruption_robustness(
    model: Model,
    pixels: torch.Tensor,
    labels: Sequence[int] | torch.Tensor,
    *,
    corruptions: Sequence[str] = CORRUPTIONS,
    severities: Sequence[int] = (1, 2, 3, 4, 5),
    seed: int = 0,
    items: Sequence[int] | None = None,
    batch_size: int = 32,
    progress: ProgressFn | None = None,
) -> Result:
    """Error per corruption and severity, mean corruption error, mCE and the accuracy drop.

    Hendrycks & Dietterich 2019 (arXiv:1903.12261); see the module docstring for the
    formulas and what the AlexNet normalisation means.

    Parameters
    ----------
    model
        The classifier.
    pixels
        ``(N, C, H, W)`` labelled images in [0, 1] at the model's input size (crop first,
        then corrupt: ``model.denormalize(model.prepare(files).x)``).
    labels
        The true class of each image.
    corruptions, severities, seed, items, batch_size, progress
        As :func:`corruption_predictions`.

    Returns
    -------
    Result
        Kind ``"corruption_errors"``: tensors ``corruption_errors`` ``(corruptions, severities)``,
        ``clean_predictions`` ``(N,)``, ``predictions`` ``(corruptions, severities, N)``,
        ``labels``; provenance params: the :class:`CorruptionSummary` as a dict, the
        corruptions, severities and the corruption package's version.
    """
    labels_t = torch.as_tensor(
        list(labels) if not isinstance(labels, torch.Tensor) else labels, dtype=torch.int64
    )
    n = pixels.shape[0] if isinstance(pixels, torch.Tensor) and pixels.dim() == 4 else -1
    if labels_t.dim() != 1 or labels_t.numel() != n:
        raise BadInputError(f"{labels_t.numel()} labels for {n} images; pass one label per image")
    started = time.perf_counter()
    clean, corrupted = corruption_predictions(
        model,
        pixels,
        corruptions=corruptions,
        severities=severities,
        seed=seed,
        items=items,
        batch_size=batch_size,
        progress=progress,
    )
    return result_from_predictions(
        model,
        clean,
        corrupted,
        labels_t,
        corruptions,
        severities,
        seed=seed,
        seconds=time.perf_counter() - started,
    )


def result_from_predictions(
    model: Model,
    clean: torch.Tensor,
    corrupted: torch.Tensor,
    labels: torch.Tensor,
    corruptions: Sequence[str],
    severities: Sequence[int],
    *,
    seed: int = 0,
    seconds: float | None = None,
    sources: Sequence[str] | None = None,
) -> Result:
    """The :func:`corruption_robustness` result from predictions computed elsewhere (a dataset run)."""
    labels = torch.as_tensor(labels, dtype=torch.int64).cpu()
    summary = summary_from_predictions(clean, corrupted, labels, list(corruptions), severities)
    errors = torch.tensor([summary.errors[c] for c in summary.corruptions], dtype=torch.float64)
    params = {
        **summary.to_dict(),
        "n_images": int(labels.numel()),
        "package": _package_version(),
        "space": "pixel space at the model's resolution (crop first, then corrupt), 8-bit",
        "seconds": None if seconds is None else round(seconds, 3),
    }
    tensors = {
        "corruption_errors": errors,
        "clean_predictions": clean.cpu(),
        "predictions": corrupted.cpu(),
        "labels": labels,
    }
    provenance = make_provenance(model, "corruptions", params=params, seed=seed)
    return Result("corruption_errors", tensors, provenance, sources=list(sources or []))


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"imagecorruptions-imaug {version('imagecorruptions-imaug')}"
    except PackageNotFoundError:  # pragma: no cover - an installed fork under another name
        return "imagecorruptions"
