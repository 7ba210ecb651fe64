"""Pictures of docs/features/attacks.md (the lead wires ``main`` into make_docs_images.py).

python scripts/docs_images_attacks.py      # about two minutes on one core
"""

from __future__ import annotations

from pathlib import Path

import torch

import convlens
from convlens.adversarial import attack, attack_curve
from convlens.data.samples import labelled_imagenet_files
from convlens.models.small import load_dataset
from convlens.render.adversarial import attack_figure, curve_figure
from convlens.render.figures import save_figure

OUT = Path(__file__).resolve().parents[1] / "docs" / "images"


def main(out: Path = OUT) -> list[Path]:
    """Write the attack figure, the black-box figure and the accuracy-vs-budget curve."""
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    model = convlens.load_model("efficientnet_lite0")
    result = attack(model, ["sample:cat"], "pgd", eps=1 / 255, steps=20, seed=0)
    written.append(save_figure(attack_figure(result, labels=model.labels), out / "attack_pgd.png"))
    files = labelled_imagenet_files()[:10]
    if files:
        batch = model.prepare([str(p) for p, _ in files])
        labels = torch.tensor([label for _, label in files])
        curve = attack_curve(
            model,
            model.denormalize(batch.x),
            labels,
            methods=["fgsm", "bim", "pgd"],
            eps=[0, 0.5 / 255, 1 / 255, 2 / 255, 4 / 255],
            steps=10,
            seed=0,
        )
        written.append(save_figure(curve_figure(curve), out / "attack_curve.png"))
    digits = convlens.load_model("digits_cnn")
    x, y = load_dataset("digits", "test")
    square = attack(digits, x[:1], "square", eps=0.3, steps=2000, labels=y[:1], seed=0, p_init=0.8)
    written.append(
        save_figure(attack_figure(square, labels=digits.labels), out / "attack_square_digits.png")
    )
    return written


if __name__ == "__main__":
    torch.set_num_threads(1)
    for path in main():
        print(path)
