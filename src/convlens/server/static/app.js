// convlens explorer: plain JS, no build step. All state of this tab lives here (the
// server keeps none per tab): the image id, the chosen model, method, target and layer.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { info: null, model: null, image: null, explainSeq: 0, mapsSeq: 0, jobs: {} };

function setStatus(text, isError = false) {
  const s = $("status");
  s.textContent = text;
  s.className = isError ? "error" : "";
}

async function api(path, options = {}) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => ({ detail: response.statusText }));
  if (!response.ok) throw new Error(body.detail || `HTTP ${response.status}`);
  return body;
}

const post = (path, body) =>
  api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });

function showLink(id, href) {
  const a = $(id);
  a.href = href + (href.includes("?") ? "&" : "?") + "download=true";
  a.hidden = false;
}

function fileUrl(name) {
  return `/api/images/${state.image}/files/${name}`;
}

function percent(p) {
  return `${(p * 100).toFixed(1)}%`;
}

function fillPredictions(list, top) {
  list.replaceChildren(
    ...top.map((t) => {
      const li = document.createElement("li");
      li.dataset.class = t.class;
      li.dataset.probability = t.probability;
      li.textContent = `${t.label} (${t.class}) ${percent(t.probability)}`;
      return li;
    })
  );
}

// -- start-up ------------------------------------------------------------------------
function fillMethods() {
  // only the methods the chosen model can run (attention maps need a transformer)
  const usable = state.info.methods.filter((m) => !m.models || m.models.includes(state.model));
  const previous = $("method").value;
  $("method").replaceChildren(...usable.map((m) => new Option(m.name + (m.uses_layer ? " (layer)" : ""), m.name)));
  const keep = usable.some((m) => m.name === previous) ? previous : null;
  $("method").value = keep || (usable.some((m) => m.name === "gradcam") ? "gradcam" : usable[0].name);
}

async function init() {
  state.info = await api("/api/info");
  const model = $("model");
  model.replaceChildren(...state.info.models.map((m) => new Option(m, m)));
  model.value = state.info.default_model;
  state.model = model.value;
  fillMethods();
  $("samples").replaceChildren(
    ...state.info.samples.map((s) => {
      const b = document.createElement("button");
      b.textContent = s.name;
      b.title = s.source;
      b.dataset.sample = s.name;
      b.addEventListener("click", () => useImage(post(`/api/samples/${encodeURIComponent(s.name)}`, {})));
      return b;
    })
  );
  await loadModel();
  document.body.dataset.ready = "1";
  setStatus("pick a photo or drop an image");
}

async function loadModel() {
  const [labels, layers] = await Promise.all([
    api(`/api/models/${encodeURIComponent(state.model)}/labels`),
    api(`/api/models/${encodeURIComponent(state.model)}/layers`),
  ]);
  $("labels").replaceChildren(...labels.map((l) => new Option(`${l.class} ${l.label}`)));
  const spatial = layers.layers.filter((l) => l.output_shape && l.output_shape.length === 3 && l.calls === 1);
  $("layer").replaceChildren(
    ...spatial.map((l) => new Option(`${l.name} (${l.type} ${l.output_shape.join("x")})`, l.name))
  );
  if (layers.default_cam_layer) $("layer").value = layers.default_cam_layer;
}

// -- image ---------------------------------------------------------------------------
async function useImage(created) {
  try {
    setStatus("loading image...");
    const image = await created;
    state.image = image.id;
    document.body.dataset.image = image.id;
    $("original").src = `/api/images/${image.id}/original.png`;
    $("image-name").textContent = `${image.name} (${image.width}x${image.height})`;
    showLink("download-original", `/api/images/${image.id}/original.png`);
    for (const id of ["adversarial", "perturbation", "vis", "overlay"]) $(id).removeAttribute("src");
    $("maps").replaceChildren();
    $("attack-predictions").replaceChildren();
    await Promise.all([predict(), explain()]);
  } catch (e) {
    setStatus(e.message, true);
  }
}

async function predict() {
  const image = state.image;
  const p = await api(`/api/images/${image}/predictions?model=${encodeURIComponent(state.model)}&top_k=5`);
  if (image !== state.image) return;
  fillPredictions($("predictions"), p.top);
  $("predictions").dataset.image = image;
}

function upload(file) {
  const limit = state.info.limits.max_bytes;
  if (file.size > limit) {
    setStatus(`${file.name}: ${file.size} bytes is over the server's limit of ${limit}`, true);
    return;
  }
  useImage(api(`/api/images?name=${encodeURIComponent(file.name)}`, { method: "POST", body: file }));
}

// -- attribution ---------------------------------------------------------------------
function targetValue() {
  const text = $("target").value.trim();
  if (!text) return null;
  const m = text.match(/^(\d+)(\s|$)/);
  return m ? Number(m[1]) : text;
}

function overlayUrl() {
  const alpha = Number($("opacity").value).toFixed(2);
  return `/api/images/${state.image}/overlays/${state.mapKey}.png?alpha=${alpha}`;
}

// Methods that report progress (Score-CAM, integrated gradients, SmoothGrad, occlusion:
// /api/info says which) run as jobs with a progress bar and Cancel; the rest answer at once.
async function explain() {
  if (!state.image) return;
  const seq = ++state.explainSeq;
  const body = { model: state.model, method: $("method").value, target: targetValue(), layer: $("layer").value || null };
  const slow = state.info.methods.some((m) => m.name === body.method && m.progress);
  supersede("explain"); // an older map still computing would hold the model until it ends
  $("overlay").dataset.ready = "";
  setStatus(`computing ${body.method}...`);
  try {
    let r;
    if (slow) {
      const job = await follow(await post("/api/jobs/explain", { image: state.image, ...body }), "explain");
      if (job.status !== "done" || seq !== state.explainSeq) return;
      r = job.result;
    } else {
      r = await post(`/api/images/${state.image}/explain`, body);
    }
    if (seq !== state.explainSeq) return; // a newer choice superseded this one
    state.mapKey = r.key;
    const target = r.target.class === null ? "" : ` for ${r.target.label} (${r.target.class})`;
    const where = r.layer ? ` at ${r.layer}` : "";
    $("overlay-caption").textContent = `${r.method}${target}${where}, ${Math.round(r.seconds * 1000)} ms`;
    showLink("download-map", fileUrl(r.files.map));
    showLink("download-attribution", fileUrl(r.files.attribution));
    drawOverlay();
    setStatus("");
  } catch (e) {
    if (seq === state.explainSeq) setStatus(e.message, true);
  }
}

function drawOverlay() {
  if (!state.mapKey) return;
  const img = $("overlay");
  const url = overlayUrl();
  img.dataset.ready = "";
  img.onload = () => {
    if (img.getAttribute("src") === url) img.dataset.ready = "1";
  };
  img.src = url;
  showLink("download-overlay", url);
}

// -- feature maps and channel visualisation -----------------------------------------
async function showMaps() {
  if (!state.image) return setStatus("pick an image first", true);
  const seq = ++state.mapsSeq;
  setStatus("computing feature maps...");
  try {
    const r = await post(`/api/images/${state.image}/activations`, { model: state.model, layer: $("layer").value });
    if (seq !== state.mapsSeq) return;
    $("maps").replaceChildren(
      ...r.channels.map((c) => {
        const img = document.createElement("img");
        img.src = fileUrl(c.file);
        img.title = `channel ${c.channel} (mean ${c.strength.toFixed(3)})`;
        img.dataset.channel = c.channel;
        img.addEventListener("click", () => {
          for (const other of $("maps").children) other.classList.remove("selected");
          img.classList.add("selected");
          visualize(r.layer, c.channel);
        });
        return img;
      })
    );
    $("maps").dataset.layer = r.layer;
    showLink("download-maps", fileUrl(r.files.grid));
    showLink("download-acts", fileUrl(r.files.activations));
    setStatus("");
  } catch (e) {
    setStatus(e.message, true);
  }
}

// Poll a job, moving its progress bar, until it ends; resolves with the job.
async function follow(job, panel) {
  state.jobs[panel] = job.id;
  const box = $(`${panel}-job`);
  const bar = $(`${panel}-progress`);
  bar.removeAttribute("value");
  box.hidden = !(job.status === "queued" || job.status === "running"); // a cached result is done already
  let current = true; // still this panel's job (not replaced by a newer request)
  try {
    while (job.status === "queued" || job.status === "running") {
      await new Promise((resolve) => setTimeout(resolve, 250));
      job = await api(`/api/jobs/${job.id}`);
      if (job.total) {
        bar.max = job.total;
        bar.value = job.done;
      }
    }
  } finally {
    current = state.jobs[panel] === job.id;
    if (current) {
      box.hidden = true;
      state.jobs[panel] = null; // ended: nothing left to cancel
    }
  }
  if (job.status === "error") throw new Error(job.error);
  if (job.status === "cancelled" && current) setStatus("cancelled");
  return job;
}

async function cancel(panel) {
  const id = state.jobs[panel];
  if (id) await api(`/api/jobs/${id}`, { method: "DELETE" }).catch(() => {});
}

// Cancel a panel's job because a newer request replaces it (no "cancelled" status shown).
function supersede(panel) {
  const id = state.jobs[panel];
  if (!id) return;
  state.jobs[panel] = null;
  $(`${panel}-job`).hidden = true;
  api(`/api/jobs/${id}`, { method: "DELETE" }).catch(() => {});
}

async function visualize(layer, channel) {
  setStatus(`visualising ${layer} channel ${channel}...`);
  try {
    const job = await follow(await post("/api/jobs/visualize", { model: state.model, layer, channel }), "vis");
    if (job.status !== "done") return;
    $("vis").src = job.result.file;
    $("vis-caption").textContent = `what ${layer} channel ${channel} responds to (${job.result.steps} steps)`;
    showLink("download-vis", job.result.file);
    setStatus("");
  } catch (e) {
    setStatus(e.message, true);
  }
}

// -- attack --------------------------------------------------------------------------
async function runAttack() {
  if (!state.image) return setStatus("pick an image first", true);
  const eps = Number($("eps").value) / 255;
  setStatus("attacking...");
  try {
    const body = { image: state.image, model: state.model, eps, steps: Number($("steps").value) };
    const job = await follow(await post("/api/jobs/attack", body), "attack");
    if (job.status !== "done") return;
    const r = job.result;
    if (r.image !== state.image) return;
    $("adversarial").src = fileUrl(r.files.adversarial);
    $("perturbation").src = fileUrl(r.files.perturbation);
    fillPredictions($("attack-predictions"), r.after);
    showLink("download-adversarial", fileUrl(r.files.adversarial));
    showLink("download-perturbation", fileUrl(r.files.perturbation));
    showLink("download-perturbation-raw", fileUrl(r.files.perturbation_raw));
    setStatus(r.success ? `fooled: now ${r.after[0].label}` : "not fooled at this budget");
  } catch (e) {
    setStatus(e.message, true);
  }
}

// -- wiring --------------------------------------------------------------------------
$("model").addEventListener("change", async () => {
  state.model = $("model").value;
  fillMethods();
  await loadModel();
  if (state.image) await Promise.all([predict(), explain()]);
});
$("method").addEventListener("change", explain);
$("layer").addEventListener("change", () => {
  explain();
  if ($("maps").children.length) showMaps(); // the maps panel follows the chosen layer
});
$("target").addEventListener("change", explain);
$("opacity").addEventListener("input", () => {
  $("opacity-value").textContent = Number($("opacity").value).toFixed(2);
});
$("opacity").addEventListener("change", drawOverlay);
$("eps").addEventListener("input", () => {
  $("eps-value").textContent = `${$("eps").value}/255`;
});
$("file").addEventListener("change", () => {
  if ($("file").files.length) upload($("file").files[0]);
});
const drop = $("drop");
drop.addEventListener("dragover", (e) => {
  e.preventDefault();
  drop.classList.add("over");
});
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  if (e.dataTransfer.files.length) upload(e.dataTransfer.files[0]);
});
$("show-maps").addEventListener("click", showMaps);
$("run-attack").addEventListener("click", runAttack);
$("vis-cancel").addEventListener("click", () => cancel("vis"));
$("attack-cancel").addEventListener("click", () => cancel("attack"));
$("explain-cancel").addEventListener("click", () => cancel("explain"));

init().catch((e) => setStatus(e.message, true));
