"""Pictures of docs/features/bias.md: samples of the biased digits and the check on both models.

python scripts/docs_images_bias.py   # about 30 s on one core (trains both models if not cached)
"""

from __future__ import annotations

from pathlib import Path

import convlens
from convlens.data.biased import make_biased
from convlens.metrics.bias import bias_check
from convlens.render.bias import bias_figure, bias_samples_figure
from convlens.render.figures import save_figure

OUT = Path(__file__).resolve().parents[1] / "docs" / "images"


def main(out: Path = OUT) -> list[Path]:
    """Write bias_samples.png, bias_biased.png and bias_fair.png."""
    out.mkdir(parents=True, exist_ok=True)
    splits = {s: make_biased(s) for s in ("train", "counter", "unbiased")}
    written = [save_figure(bias_samples_figure(splits), out / "bias_samples.png")]
    test, counter = make_biased("test"), make_biased("counter")
    for name, stem in (("bias_digits_cnn", "bias_biased"), ("fair_digits_cnn", "bias_fair")):
        model = convlens.load_model(name)
        report = bias_check(
            model,
            model.normalize(test.pixels),
            test.labels,
            test.masks,
            counter=(model.normalize(counter.pixels), counter.labels, counter.masks),
        )
        print(
            f"{name}: share {report.main.mean_share:.3f} / counter {report.counter.mean_share:.3f}, accuracy {report.main.accuracy:.3f} -> counter {report.counter.accuracy:.3f}"
        )
        written.append(
            save_figure(
                bias_figure(report, test.pixels, counter.pixels, top=6), out / f"{stem}.png"
            )
        )
    return written


if __name__ == "__main__":
    for path in main():
        print(path)
