"""Picture for docs/features/defences.md: defences on the 359 held-out digits, clean and under
transfer, non-adaptive and adaptive (BPDA / EOT) PGD at eps 0.2.

    python scripts/docs_images_defences.py

Writes docs/images/defences.png (~40 s on one thread; the PGD-trained model is trained first
if it is not cached, ~10 s) and prints the table.
"""

from __future__ import annotations

from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "docs" / "images"


def main() -> None:
    import convlens
    from convlens.adversarial.defence_eval import evaluate_defences
    from convlens.adversarial.defences import make_defence
    from convlens.models.small import load_dataset
    from convlens.render.defences import defences_figure
    from convlens.render.figures import save_figure

    torch.set_num_threads(1)
    model = convlens.load_model("digits_cnn")
    robust = convlens.load_model("digits_cnn_pgd")
    x, y = load_dataset("digits", "test")
    defences = [
        make_defence("jpeg", quality=75),
        make_defence("bits", bits=1),
        make_defence("bits", bits=2),
        make_defence("noise", sigma=0.2),
    ]
    result = evaluate_defences(
        model, x, y, defences, robust_model=robust, eps=0.2, steps=20, eot_samples=8, seed=0
    )
    params = result.provenance["params"]
    for name, row, lost in zip(params["defences"], result["accuracy"], params["gain_lost"]):
        print(
            f"{name:12s}",
            " ".join(f"{float(v):6.1%}" for v in row),
            "gain lost",
            "-" if lost is None else f"{lost:.0%}",
        )
    IMAGES.mkdir(parents=True, exist_ok=True)
    title = "digits_cnn, 359 held-out digits: L-inf PGD eps 0.2, 20 steps, EOT 8 draws"
    save_figure(defences_figure(result, title=title), IMAGES / "defences.png", dpi=90)
    print("docs/images/defences.png")


if __name__ == "__main__":
    main()
