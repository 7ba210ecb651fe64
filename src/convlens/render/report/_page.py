"""The page around the sections: inline CSS, a contents list, one column per model.

No script, no external stylesheet or font, no URL: the file opens from disk as it is.
"""

from __future__ import annotations

import html
import time
from typing import Any

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1400px;padding:1em 2em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-top:.6em}h3{font-size:1.05em;margin:.4em 0}
nav ol{columns:3}.row{display:flex;gap:2em;align-items:flex-start}.col{flex:1;min-width:0}
figure{display:inline-block;margin:.3em;vertical-align:top;max-width:100%}
figure img{max-width:100%;image-rendering:pixelated;border:1px solid #ddd}
figcaption{font-size:.85em;white-space:pre-line;max-width:260px}
details{font-size:.75em}pre{white-space:pre-wrap;max-width:420px;max-height:16em;overflow:auto;background:#f6f6f6}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ddd;padding:2px 6px;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.bar{display:inline-block;height:.8em;background:#4a7fb5}.na{color:#a33;font-style:italic}
"""


def render_page(
    source: str, models: list[str], sections: list[dict[str, Any]], *, full: bool, seed: int
) -> str:
    """The whole HTML document from the built sections (see ``build_report``)."""
    esc = html.escape
    title = f"convlens report: {source} ({', '.join(models)})"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        f"<p>Made {esc(time.strftime('%Y-%m-%d %H:%M:%S %z'))}; {'full' if full else 'quick'} settings; seed {seed}.</p>",
        "<nav><ol>"
        + "".join(f'<li><a href="#{esc(s["name"])}">{esc(s["title"])}</a></li>' for s in sections)
        + "</ol></nav>",
    ]
    for s in sections:
        parts.append(
            f'<section id="{esc(s["name"])}" class="report-section" data-section="{esc(s["name"])}"><h2>{esc(s["title"])}</h2><div class="row">'
        )
        for cell in s["cells"]:
            parts.append(f'<div class="col" data-model="{esc(cell["model"])}">')
            if len(models) > 1:
                parts.append(f"<h3>{esc(cell['model'])}</h3>")
            if cell["fragment"] is not None:
                parts.append(cell["fragment"].html)
            else:
                parts.append(
                    f'<p class="na">Not available for this model: {esc(str(cell["reason"]))}</p>'
                )
            parts.append(f'<p class="seconds">{cell["seconds"]:.1f} s</p></div>')
        parts.append("</div></section>")
    parts.append("</body></html>")
    return "\n".join(parts)
