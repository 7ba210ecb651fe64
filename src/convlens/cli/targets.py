"""CLI forms of the dense targets: ``--target-region CLASS:MASK.png`` and ``--target-similar IMAGE``.

Commands that explain a score add them with :func:`add_target_options`, read them with
:func:`parse_target_options` (bad files and combinations fail here, before any work), check
them against each model with :meth:`DenseTargetOption.check` and get the target of one image
with :meth:`DenseTargetOption.for_image`.

Mask sizes: a mask with the size of the model input is used as it is (then resized to the
output, nearest-neighbour, as :func:`convlens.targets.region` does); a mask with the size of
the image given is carried through the same resize and centre crop as the image. Any other
size is refused, since it is unclear where it lies on the image.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from convlens.errors import BadInputError, ConvlensError, TargetError

if TYPE_CHECKING:
    from convlens.models.model import Model

__all__ = ["DenseTargetOption", "add_target_options", "parse_target_options"]


def add_target_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--target-region`` and ``--target-similar`` (each exclusive with ``--target``)."""
    parser.add_argument(
        "--target-region",
        default=None,
        metavar="CLASS:MASK.png",
        help="segmentation models: explain the sum of CLASS's logits (index or label) over the mask's non-zero pixels; the mask has the image's size or the model input's",
    )
    parser.add_argument(
        "--target-similar",
        default=None,
        metavar="IMAGE",
        help="embedding models: explain the cosine similarity of the model's output to that of IMAGE (a file or sample:NAME)",
    )


@dataclass
class DenseTargetOption:
    """A parsed ``--target-region`` or ``--target-similar``."""

    kind: str  # "region" or "similar"
    text: str  # the option's value, for messages
    class_key: int | str | None = None
    mask: torch.Tensor | None = None  # bool (H, W)
    reference: str | None = None
    _bound: dict[int, Any] = field(default_factory=dict, repr=False)

    @property
    def flag(self) -> str:
        return f"--target-{self.kind}"

    def check(self, model: Model, image_args: Sequence[str]) -> None:
        """Fail (BadInputError, exit 2) unless this target works with ``model`` on the images.

        Region: the class resolves, the model's output is ``(N, classes, H, W)`` with that
        class, and the mask has the model input's or each image's size. Similar: the
        reference image reads and the model's output is a tensor; it is embedded once here.
        """
        from convlens.targets import region, similarity

        bound: Any
        try:
            if self.kind == "region":
                assert self.mask is not None and self.class_key is not None
                bound = region(self.class_key, self.mask).bind(model)
                out = _probe(model)
                if not isinstance(out, torch.Tensor) or out.dim() != 4:
                    raise TargetError(
                        f"needs a segmentation model, whose output is (N, classes, H, W); {model.name} gives {_shape(out)}"
                    )
                if not 0 <= int(bound.class_index) < out.shape[1]:
                    raise TargetError(
                        f"class {bound.class_index} is out of range: {model.name} has {out.shape[1]} output classes"
                    )
                self._check_mask_sizes(model, image_args)
            else:
                assert self.reference is not None
                bound = similarity(self.reference).bind(model)
        except ConvlensError as exc:
            raise BadInputError(f"{self.flag} {self.text}: {exc}") from None
        self._bound[id(model)] = bound

    def _check_mask_sizes(self, model: Model, image_args: Sequence[str]) -> None:
        assert self.mask is not None
        size = tuple(self.mask.shape)
        if size == tuple(model.input_size):
            return
        for arg in _expand(image_args):
            image_size = _image_size(arg)
            if image_size is not None and image_size != size:
                h, w = model.input_size
                raise BadInputError(
                    f"{self.flag} {self.text}: the mask is {size[1]}x{size[0]} but the image {arg} is {image_size[1]}x{image_size[0]} and the model input {w}x{h}; give a mask of one of those sizes"
                )

    def for_image(self, model: Model, image: torch.Tensor) -> Any:
        """The target for one image (image space ``(3, H, W)``) on ``model`` (after :meth:`check`)."""
        bound = self._bound.get(id(model))
        if bound is None:
            self.check(model, [])
            bound = self._bound[id(model)]
        if self.kind == "similar":
            return bound
        from convlens.targets import Region

        assert self.mask is not None
        mask = self.mask
        if tuple(mask.shape) != tuple(model.input_size):
            if tuple(mask.shape) != tuple(image.shape[-2:]):
                raise BadInputError(
                    f"{self.flag} {self.text}: the mask is {mask.shape[1]}x{mask.shape[0]} but the image is {image.shape[-1]}x{image.shape[-2]}"
                )
            # the same resize and centre crop as the image (bilinear on 0/1, then the majority)
            pixels, _ = model.preprocessing.to_pixels(mask[None].float())
            mask = pixels[0] >= 0.5
            if not bool(mask.any()):
                raise BadInputError(
                    f"{self.flag} {self.text}: no mask pixel is left inside the model's centre crop of the image"
                )
        return Region(bound.class_index, mask, label=bound.label)


def parse_target_options(
    args: argparse.Namespace, target_flag: str = "--target", target_value: Any = None
) -> DenseTargetOption | None:
    """Read ``--target-region`` / ``--target-similar`` from ``args`` (None when neither is given).

    ``target_value`` is the value of the class/neuron option they exclude (``target_flag``).

    Raises
    ------
    BadInputError
        Both given, or with ``target_flag``; ``CLASS:MASK`` malformed; the mask file
        missing, unreadable or empty; the reference image missing or unreadable.
    """
    region_text = getattr(args, "target_region", None)
    similar_text = getattr(args, "target_similar", None)
    given = [
        flag
        for flag, value in (
            ("--target-region", region_text),
            ("--target-similar", similar_text),
            (target_flag, target_value),
        )
        if value is not None
    ]
    if len(given) > 1:
        raise BadInputError(f"{' and '.join(given)} are exclusive: give one target")
    if region_text is not None:
        return _parse_region(region_text)
    if similar_text is not None:
        return _parse_similar(similar_text)
    return None


def _parse_region(text: str) -> DenseTargetOption:
    from convlens.targets import load_mask

    key, sep, path = text.partition(":")
    if not sep or not key.strip() or not path.strip():
        raise BadInputError(
            f"--target-region {text!r}: expected CLASS:MASK.png, e.g. square:mask.png or 1:mask.png"
        )
    try:
        mask = load_mask(path)
    except BadInputError as exc:
        raise BadInputError(f"--target-region {text}: {exc}") from None
    if mask.dim() != 2:
        raise BadInputError(f"--target-region {text}: the mask must be one 2-D image")
    if not bool(mask.any()):
        raise BadInputError(
            f"--target-region {text}: the mask {path} has no non-zero pixel; mark the region in white (or any colour) on black"
        )
    class_key: int | str = int(key) if key.strip().isdigit() else key.strip()
    return DenseTargetOption("region", text, class_key=class_key, mask=mask)


def _parse_similar(text: str) -> DenseTargetOption:
    from convlens.data.images import load_image
    from convlens.data.samples import load_sample
    from convlens.errors import ImageReadError

    try:
        load_image(load_sample(text) if text.startswith("sample:") else text, name=text)
    except ImageReadError as exc:
        raise BadInputError(f"--target-similar {text}: {exc.reason}") from None
    reference = text if text.startswith("sample:") else str(Path(text))
    return DenseTargetOption("similar", text, reference=reference)


def _probe(model: Model) -> Any:
    """The model's output for one blank input (eval mode, no gradient): its shape tells
    whether a target can read it."""
    from convlens.hooks import eval_mode

    h, w = model.input_size
    x = torch.zeros(1, model.channels, h, w, device=model.device, dtype=model.dtype)
    with eval_mode(model.module), torch.no_grad():
        return model.module(x)


def _shape(value: Any) -> object:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__


def _expand(image_args: Sequence[str]) -> list[str]:
    from convlens.cli.images import expand_image_args

    return expand_image_args(image_args)


def _image_size(arg: str) -> tuple[int, int] | None:
    """``(H, W)`` of an image argument as convlens reads it, or None when it cannot be read
    (the command reports it in turn with the other bad inputs)."""
    from convlens.data.images import load_image
    from convlens.data.samples import load_sample
    from convlens.errors import ImageReadError

    try:
        image = load_image(load_sample(arg) if arg.startswith("sample:") else arg, name=arg)
    except ImageReadError:
        return None
    return int(image.shape[-2]), int(image.shape[-1])
