"""Pictures of docs/features/transformers.md (to wire into make_docs_images.py).

python scripts/docs_images_transformers.py      # seconds once digits_vit is cached
"""

from __future__ import annotations

from pathlib import Path

import convlens
from convlens.models.small import load_dataset
from convlens.render.attribution import comparison_figure
from convlens.render.figures import save_figure

OUT = Path(__file__).resolve().parents[1] / "docs" / "images"
METHODS = ("attention_rollout", "attention_map", "gradcam", "gradient_x_input")


def main(out: Path = OUT) -> list[Path]:
    """Three held-out digits through the digits ViT: rollout, last-layer attention, Grad-CAM on blocks.2.norm1, gradient x input."""
    out.mkdir(parents=True, exist_ok=True)
    model = convlens.load_model("digits_vit")
    pixels, labels = load_dataset("digits", "test")
    written = []
    for i in (0, 1, 2):
        batch = model.prepare(pixels[i : i + 1])
        results = [convlens.explain(model, batch, m, target=int(labels[i])) for m in METHODS]
        pred = model.predict(batch, top_k=1)[0]
        path = out / f"transformers_digit{i}.png"
        save_figure(
            comparison_figure(
                [(model.name, results)],
                0,
                labels=[model.labels],
                predictions=[f"{pred.labels[0]} {pred.probabilities[0]:.0%}"],
            ),
            path,
        )
        written.append(path)
    return written


if __name__ == "__main__":
    for path in main():
        print(path)
