"""Drawing a 2-D or 3-D embedding: a self-contained interactive HTML map and a PNG scatter.

The HTML page needs nothing but itself: the points, labels and thumbnails are one JSON
block inside ``<script type="application/json" id="convlens-map-data">`` (thumbnails as
``data:image/jpeg;base64`` URIs), drawn on a canvas by inline JavaScript. It colours by
label or prediction (a toggle), shows the thumbnail and path on hover, and zooms with the
wheel and pans by dragging. A 3-D embedding (``coords`` ``(N, 3)``) gives the same page with
a ``z`` per point, drawn in perspective, far points first, and rotated by dragging (a few
lines of canvas JavaScript; no WebGL, no library). No external URL, no CDN: it opens offline.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from convlens.atomic import atomic_write_text

__all__ = ["embedding_figure", "embedding_html", "thumbnail_uri", "write_html"]

_PALETTE = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1", "#636363",
]  # fmt: skip
_UNLABELLED = "#bbbbbb"


def thumbnail_uri(path: str | os.PathLike[str], size: int = 64) -> str | None:
    """A small JPEG of an image file as a ``data:`` URI (None when it cannot be read)."""
    from PIL import Image

    from convlens.data.images import load_image
    from convlens.errors import BadInputError

    try:
        image = load_image(path)
    except (BadInputError, OSError):
        return None
    array = (image.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    pil = Image.fromarray(array if array.shape[2] == 3 else array[..., 0])
    pil.thumbnail((size, size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    pil.convert("RGB").save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _names(classes: np.ndarray, name: Callable[[int], str] | None) -> dict[str, str]:
    out = {}
    for c in sorted({int(v) for v in classes}):
        out[str(c)] = "unlabelled" if c < 0 else (name(c) if name is not None else str(c))
    return out


def embedding_html(
    embedding: Any,
    *,
    color: str = "label",
    class_name: Callable[[int], str] | None = None,
    thumbnails: Sequence[str | None] | None = None,
    title: str = "convlens embedding",
    label_name: Callable[[int], str] | None = None,
) -> str:
    """The interactive map as one HTML string.

    Parameters
    ----------
    embedding
        An :class:`~convlens.represent.embed.Embedding`.
    color
        Initial colouring, ``"label"`` or ``"prediction"`` (the page has a toggle).
    class_name
        Class index -> name, for the legend and hover text.
    label_name
        Names of the labels when they are not the model's classes (default ``class_name``).
    thumbnails
        Per point, a ``data:`` URI or None (see :func:`thumbnail_uri`).
    """
    coords = np.asarray(embedding.coords, dtype=np.float64)
    n = coords.shape[0]
    if thumbnails is not None and len(thumbnails) != n:
        raise ValueError(f"{len(thumbnails)} thumbnails for {n} points")
    lo, hi = coords.min(axis=0), coords.max(axis=0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    unit = (coords - lo) / span  # [0, 1] per axis: the page scales to its canvas
    dims = 3 if coords.ndim == 2 and coords.shape[1] == 3 else 2
    labels = np.asarray(embedding.labels, dtype=np.int64)
    preds = np.asarray(embedding.predictions, dtype=np.int64)
    points = [
        {
            "x": round(float(unit[i, 0]), 5),
            "y": round(float(unit[i, 1]), 5),
            **({"z": round(float(unit[i, 2]), 5)} if dims == 3 else {}),
            "path": str(embedding.paths[i]),
            "label": int(labels[i]),
            "prediction": int(preds[i]),
            "thumb": thumbnails[i] if thumbnails is not None else None,
        }
        for i in range(n)
    ]
    data = {
        "method": embedding.method,
        "dims": dims,
        "color": color if color in ("label", "prediction") else "label",
        "classes": {
            "label": _names(labels, label_name or class_name),
            "prediction": _names(preds, class_name),
        },
        "palette": _PALETTE,
        "unlabelled": _UNLABELLED,
        "points": points,
        "provenance": embedding.provenance,
    }
    # "</" cannot end the script block early when escaped; JSON parses "<\/" as "</".
    payload = json.dumps(data, separators=(",", ":"), default=str).replace("</", "<\\/")
    return _TEMPLATE.replace("__TITLE__", html.escape(title)).replace("__DATA__", payload)


def write_html(text: str, path: str | os.PathLike[str]) -> Path:
    """Write the page atomically."""
    return atomic_write_text(path, text)


def embedding_figure(
    embedding: Any,
    *,
    color: str = "label",
    class_name: Callable[[int], str] | None = None,
    max_legend: int = 20,
) -> Figure:
    """A PNG-ready scatter of the map, coloured by label or prediction, with a legend.

    A 3-D embedding is drawn as a matplotlib 3-D scatter from a fixed viewpoint.
    """
    values = np.asarray(
        embedding.labels if color == "label" else embedding.predictions, dtype=np.int64
    )
    coords = np.asarray(embedding.coords)
    three = coords.ndim == 2 and coords.shape[1] == 3
    fig = Figure(figsize=(7.5, 6.5), dpi=100)
    # Any: a 3-D axes takes three columns and has set_zticks, which Axes does not declare
    ax: Any = fig.add_subplot(1, 1, 1, projection="3d") if three else fig.add_subplot(1, 1, 1)
    classes = sorted({int(v) for v in values})
    size = max(4.0, min(30.0, 3000.0 / max(1, len(coords))))
    for j, c in enumerate(classes):
        mask = values == c
        colour = _UNLABELLED if c < 0 else _PALETTE[j % len(_PALETTE)]
        name = "unlabelled" if c < 0 else (class_name(c) if class_name is not None else str(c))
        columns = [coords[mask, k] for k in range(3 if three else 2)]
        ax.scatter(*columns, s=size, c=colour, label=name if j < max_legend else None, linewidths=0)
    ax.set_xticks([])
    ax.set_yticks([])
    if three:
        ax.set_zticks([])
    ax.set_title(
        f"{embedding.method.upper()}{' 3-D' if three else ''} of {len(coords)} codes, coloured by {color}"
    )
    if classes:
        ax.legend(
            loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, frameon=False, markerscale=1.5
        )
    fig.tight_layout()
    return fig


_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
body{font-family:system-ui,sans-serif;margin:0;background:#fafafa;color:#222}
header{padding:8px 12px;border-bottom:1px solid #ddd;display:flex;gap:16px;align-items:center;flex-wrap:wrap}
#wrap{position:relative}
canvas{display:block;background:#fff;cursor:grab}
#tip{position:absolute;pointer-events:none;background:#fff;border:1px solid #999;padding:4px;font-size:12px;display:none;max-width:260px;box-shadow:0 1px 4px rgba(0,0,0,.2)}
#tip img{display:block;max-width:128px;max-height:128px;margin-bottom:3px}
#legend{font-size:12px;display:flex;flex-wrap:wrap;gap:8px}
#legend span i{display:inline-block;width:10px;height:10px;margin-right:3px;border-radius:5px}
</style></head><body>
<header><strong>__TITLE__</strong>
<label>colour by <select id="color"><option value="label">label</option><option value="prediction">prediction</option></select></label>
<button id="reset">reset view</button><span id="count"></span><div id="legend"></div></header>
<div id="wrap"><canvas id="map"></canvas><div id="tip"></div></div>
<script type="application/json" id="convlens-map-data">__DATA__</script>
<script>
(function(){
const data=JSON.parse(document.getElementById('convlens-map-data').textContent);
const pts=data.points, canvas=document.getElementById('map'), ctx=canvas.getContext('2d');
const tip=document.getElementById('tip'), sel=document.getElementById('color');
sel.value=data.color;
const colours={};
for(const key of ['label','prediction']){
  const ks=Object.keys(data.classes[key]).map(Number).sort((a,b)=>a-b); const c={}; let j=0;
  for(const k of ks){c[k]=k<0?data.unlabelled:data.palette[j%data.palette.length]; if(k>=0) j++;}
  colours[key]={keys:ks,colour:c};
}
let view={s:1,tx:0,ty:0}, W=0, H=0, pad=20, hover=-1;
const is3=data.dims===3, rot0={a:0.7,b:0.35}; let rot={a:rot0.a,b:rot0.b}, scr=[], order=pts.map((_,i)=>i);
function size(){W=window.innerWidth;H=Math.max(300,window.innerHeight-70);canvas.width=W;canvas.height=H;draw();}
// 3-D: the unit cube, centred, turns by yaw a (vertical axis) then pitch b, seen in
// perspective from distance 3; d is the depth (larger is nearer).
function proj3(x,y,z){
  const ca=Math.cos(rot.a),sa=Math.sin(rot.a),cb=Math.cos(rot.b),sb=Math.sin(rot.b),m=Math.min(W,H)-2*pad;
  x-=.5;y-=.5;z-=.5; const x1=ca*x+sa*z,z1=-sa*x+ca*z,y2=cb*y-sb*z1,d=sb*y+cb*z1,f=3/(3-d)*0.5*m;
  return {x:(W/2+x1*f)*view.s+view.tx,y:(H/2-y2*f)*view.s+view.ty,d:d};
}
function project(){
  scr=pts.map(p=>is3?proj3(p.x,p.y,p.z):{x:(pad+p.x*(W-2*pad))*view.s+view.tx,y:(pad+(1-p.y)*(H-2*pad))*view.s+view.ty,d:0});
  if(is3) order.sort((i,j)=>scr[i].d-scr[j].d);  // painter's order: far points first
}
function axes(){
  const o=proj3(0,0,0); ctx.strokeStyle='#bbb'; ctx.fillStyle='#888'; ctx.font='11px sans-serif';
  for(const [v,n] of [[[1,0,0],'1'],[[0,1,0],'2'],[[0,0,1],'3']]){const e=proj3(v[0],v[1],v[2]);
    ctx.beginPath();ctx.moveTo(o.x,o.y);ctx.lineTo(e.x,e.y);ctx.stroke();ctx.fillText(n,e.x+3,e.y-3);}
}
function draw(){
  project(); ctx.clearRect(0,0,W,H); const key=sel.value, colourOf=colours[key].colour, names=data.classes[key];
  if(is3) axes();
  for(const i of order){const p=pts[i];ctx.fillStyle=colourOf[p[key]];ctx.beginPath();ctx.arc(scr[i].x,scr[i].y,i===hover?6:3.5,0,6.2832);ctx.fill();}
  const shown=new Set(pts.map(p=>p[key]));
  document.getElementById('legend').innerHTML=colours[key].keys.filter(k=>shown.has(k)).map(k=>'<span><i style="background:'+colourOf[k]+'"></i>'+esc(names[k])+'</span>').join('');
  document.getElementById('count').textContent=pts.length+' points ('+data.method+(is3?', 3-D: drag to rotate, shift-drag to pan':'')+')';
}
function esc(s){return String(s).replace(/[&<>"]/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]));}
// in drawing order with <=, so of two points under the mouse the one drawn on top wins
function nearest(mx,my){let best=-1,bd=100;for(const i of order){const dx=scr[i].x-mx,dy=scr[i].y-my,d=dx*dx+dy*dy;if(d<=bd){bd=d;best=i;}}return best;}
let drag=null;
canvas.addEventListener('mousedown',e=>{drag={x:e.offsetX,y:e.offsetY,tx:view.tx,ty:view.ty,a:rot.a,b:rot.b,turn:is3&&!e.shiftKey};canvas.style.cursor='grabbing';});
window.addEventListener('mouseup',()=>{drag=null;canvas.style.cursor='grab';});
canvas.addEventListener('mousemove',e=>{
  if(drag&&drag.turn){rot.a=drag.a+(e.offsetX-drag.x)*0.01;rot.b=Math.max(-1.55,Math.min(1.55,drag.b+(e.offsetY-drag.y)*0.01));draw();return;}
  if(drag){view.tx=drag.tx+e.offsetX-drag.x;view.ty=drag.ty+e.offsetY-drag.y;draw();return;}
  const i=nearest(e.offsetX,e.offsetY); if(i!==hover){hover=i;draw();}
  if(i<0){tip.style.display='none';return;}
  const p=pts[i]; let h='';
  if(p.thumb) h+='<img src="'+p.thumb+'" alt="">';
  h+=esc(p.path)+'<br>label: '+esc(data.classes.label[p.label]||p.label)+'<br>prediction: '+esc(data.classes.prediction[p.prediction]||p.prediction);
  tip.innerHTML=h; tip.style.display='block';
  tip.style.left=Math.min(e.offsetX+12,W-270)+'px'; tip.style.top=(e.offsetY+12)+'px';
});
canvas.addEventListener('mouseleave',()=>{tip.style.display='none';hover=-1;draw();});
canvas.addEventListener('wheel',e=>{e.preventDefault();const f=e.deltaY<0?1.2:1/1.2;
  view.tx=e.offsetX-(e.offsetX-view.tx)*f;view.ty=e.offsetY-(e.offsetY-view.ty)*f;view.s*=f;draw();},{passive:false});
document.getElementById('reset').addEventListener('click',()=>{view={s:1,tx:0,ty:0};rot={a:rot0.a,b:rot0.b};draw();});
sel.addEventListener('change',draw);
window.addEventListener('resize',size); size();
})();
</script></body></html>
"""
