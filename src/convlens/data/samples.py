"""The bundled photo set: real photos that ship inside installed packages.

Names and expected classes follow DESIGN.md; use them everywhere (tests, demo, docs).
Any command that takes an image also takes ``sample:NAME`` (for example ``sample:cat``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convlens.errors import ImageReadError

__all__ = ["SAMPLES", "Sample", "labelled_imagenet_files", "load_sample", "sample_names"]


@dataclass(frozen=True)
class Sample:
    """A bundled photo, where it comes from and the built-in model's expected top-1 classes."""

    name: str
    source: str
    expected: tuple[int, ...]  # ImageNet indices; empty for unlabelled extras
    loader: Callable[[], np.ndarray]


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        image = getattr(skimage.data, name)()
        return image[0] if isinstance(image, tuple) else image

    return load


def _sklearn(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return load_sample_image(name)

    return load


def _hopper() -> np.ndarray:
    from matplotlib import cbook
    from PIL import Image

    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as im:
        return np.asarray(im.convert("RGB"))


SAMPLES: dict[str, Sample] = {
    s.name: s
    for s in [
        Sample("cat", "scikit-image chelsea()", (281, 282, 285), _skimage("chelsea")),
        Sample("coffee", "scikit-image coffee()", (967,), _skimage("coffee")),
        Sample("rocket", "scikit-image rocket()", (657, 744), _skimage("rocket")),
        Sample(
            "moped",
            "scikit-image stereo_motorcycle()[0]",
            (665, 670),
            _skimage("stereo_motorcycle"),
        ),
        Sample("palace", "scikit-learn china.jpg", (698,), _sklearn("china.jpg")),
        Sample("daisy", "scikit-learn flower.jpg", (985,), _sklearn("flower.jpg")),
        Sample("hopper", "matplotlib grace_hopper.jpg", (400, 667, 652), _hopper),
        Sample("astronaut", "scikit-image astronaut()", (), _skimage("astronaut")),
        Sample("hubble", "scikit-image hubble_deep_field()", (), _skimage("hubble_deep_field")),
        Sample("brick", "scikit-image brick()", (), _skimage("brick")),
        Sample("grass", "scikit-image grass()", (), _skimage("grass")),
        Sample("gravel", "scikit-image gravel()", (), _skimage("gravel")),
    ]
}


def labelled_imagenet_files() -> list[tuple[Path, int]]:
    """The 20 labelled ImageNet JPEGs of the ``foolbox`` wheel, as ``(path, class)``.

    Read by path (importing foolbox needs other packages); empty when foolbox is absent.
    """
    spec = importlib.util.find_spec("foolbox")
    if spec is None or not spec.submodule_search_locations:
        return []
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    files = sorted(folder.glob("imagenet_*_*.jpg"))
    return [(f, int(f.stem.rsplit("_", 1)[1])) for f in files]


def sample_names(labelled_only: bool = False) -> list[str]:
    """Names of the bundled photos (the labelled set first)."""
    return [n for n, s in SAMPLES.items() if s.expected or not labelled_only]


def load_sample(name: str) -> np.ndarray:
    """The photo as an ``(H, W, 3)`` uint8 array (grayscale textures are replicated to RGB)."""
    key = name.removeprefix("sample:")
    if key not in SAMPLES:
        raise ImageReadError(
            f"sample:{key}", f"no bundled photo of that name; choose from {', '.join(SAMPLES)}"
        )
    image = np.asarray(SAMPLES[key].loader())
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3])
