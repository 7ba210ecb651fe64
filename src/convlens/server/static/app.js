// convlens explorer: plain JS, no build step. All state of this tab lives here (the
// server keeps none per tab): the image id, the chosen model, method, target and layer.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  info: null,
  model: null,
  image: null,
  explainSeq: 0,
  mapsSeq: 0,
  patchesSeq: 0,
  reportSeq: 0,
  jobs: {},
  features: [], // the server's features folders for this model (layer browser's top patches)
  sections: [], // the report's sections for this model
  report: {}, // built report sections of this image, by name
  signMethod: null, // the method whose default sign the sign menu shows
};

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
  const model = encodeURIComponent(state.model);
  const [labels, layers, features, sections] = await Promise.all([
    api(`/api/models/${model}/labels`),
    api(`/api/models/${model}/layers`),
    api(`/api/models/${model}/features`),
    api(`/api/models/${model}/report-sections`),
  ]);
  $("labels").replaceChildren(...labels.map((l) => new Option(`${l.class} ${l.label}`)));
  const spatial = layers.layers.filter((l) => l.output_shape && l.output_shape.length === 3 && l.calls === 1);
  const label = (l) => `${l.name} (${l.type} ${l.output_shape.join("x")})`;
  $("layer").replaceChildren(...spatial.map((l) => new Option(label(l), l.name)));
  if (layers.default_cam_layer) $("layer").value = layers.default_cam_layer;
  state.features = features;
  const withFolder = (name) => features.some((f) => f.layer === name);
  $("browse-layer").replaceChildren(
    ...spatial.map((l) => new Option(label(l) + (withFolder(l.name) ? " [features]" : ""), l.name))
  );
  $("browse-layer").value = $("layer").value;
  $("features-list").textContent = features.length
    ? `Features folders: ${features.map((f) => `${f.name} at ${f.layer} (${f.images} images)`).join(", ")}.`
    : "This server has no features folder (convlens serve --features DIR).";
  state.sections = sections.sections;
  const buttons = state.sections.map((sec) => {
    const b = document.createElement("button");
    b.textContent = sec.title;
    b.dataset.section = sec.name;
    b.addEventListener("click", () => runReport([sec.name]));
    return b;
  });
  const all = document.createElement("button");
  all.textContent = "All sections";
  all.dataset.section = "all";
  all.addEventListener("click", () => runReport(null));
  $("report-buttons").replaceChildren(...buttons, all);
  clearReport();
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
    clearReport();
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

// The sign and clip chosen on the page (the sign menu starts at the method's default).
function drawSettings() {
  const clip = Number($("clip").value);
  if (!(clip > 0 && clip <= 100)) throw new Error(`clip ${$("clip").value}: a percentile in (0, 100], e.g. 99`);
  return { sign: $("sign").value, clip: Math.round(clip * 100) / 100 };
}

function overlayUrl() {
  const alpha = Number($("opacity").value).toFixed(2);
  const { sign, clip } = drawSettings();
  return `/api/images/${state.image}/overlays/${state.mapKey}.png?alpha=${alpha}&sign=${sign}&clip=${clip}`;
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
    if (r.method !== state.signMethod) {
      // a new method starts at the sign the report and the CLI draw it with
      $("sign").value = r.display.sign;
      state.signMethod = r.method;
    }
    const target = r.target.class === null ? "" : ` for ${r.target.label} (${r.target.class})`;
    const where = r.layer ? ` at ${r.layer}` : "";
    state.caption = `${r.method}${target}${where}, ${Math.round(r.seconds * 1000)} ms`;
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
  let url;
  try {
    url = overlayUrl();
  } catch (e) {
    return setStatus(e.message, true);
  }
  const { sign, clip } = drawSettings();
  $("overlay-caption").textContent = `${state.caption}; ${sign}, clip ${clip}%`;
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
    const layer = $("browse-layer").value;
    const r = await post(`/api/images/${state.image}/activations`, { model: state.model, layer });
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
          topPatches(r.layer, c.channel);
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

// -- top patches from a features folder ----------------------------------------------
async function topPatches(layer, channel) {
  const seq = ++state.patchesSeq;
  supersede("patches");
  $("patches").replaceChildren();
  $("download-patches").hidden = true;
  const folder = state.features.find((f) => f.layer === layer);
  if (!folder) {
    const have = [...new Set(state.features.map((f) => f.layer))];
    $("patches-note").textContent =
      `Layer ${layer} has no features folder (${have.length ? "this server has folders for " + have.join(", ") : "this server has none"}); ` +
      `make one with "convlens features IMAGES --layer ${layer} -o DIR" and start "convlens serve --features DIR".`;
    $("patches-note").dataset.missing = layer;
    return;
  }
  delete $("patches-note").dataset.missing;
  $("patches-note").textContent = `Channel ${channel} of ${layer}: searching ${folder.images} images of ${folder.name}...`;
  try {
    const body = { model: state.model, layer, channel };
    const job = await follow(await post("/api/jobs/patches", body), "patches");
    if (job.status !== "done" || seq !== state.patchesSeq) return;
    const r = job.result;
    $("patches").replaceChildren(
      ...r.patches.map((p) => {
        const fig = document.createElement("figure");
        const img = document.createElement("img");
        img.src = p.file;
        img.alt = `patch ${p.rank}`;
        img.dataset.rank = p.rank;
        img.title = `${p.path}\nmax ${p.value.toFixed(3)} at (${p.y}, ${p.x})`;
        const cap = document.createElement("figcaption");
        cap.textContent = `#${p.rank} ${p.path.split(/[\\/]/).pop()} ${p.value.toFixed(2)}`;
        fig.append(img, cap);
        return fig;
      })
    );
    $("patches").dataset.layer = r.layer;
    $("patches").dataset.channel = r.channel;
    $("patches-note").textContent = `Channel ${r.channel} of ${r.layer}: the ${r.patches.length} images of ${r.folder} (${r.images} read) whose maximum is largest, each cut at its maximum with the unit's receptive field (${r.receptive_field.size[0]} px).`;
    showLink("download-patches", r.files.patches);
  } catch (e) {
    if (seq === state.patchesSeq) setStatus(e.message, true);
  }
}

// -- report sections -----------------------------------------------------------------
function clearReport() {
  supersede("report");
  state.report = {};
  $("report-output").replaceChildren();
  for (const b of $("report-buttons").children) b.classList.remove("done");
}

function drawReport() {
  // in the report's order, whatever order they were run in
  $("report-output").replaceChildren(
    ...state.sections
      .filter((sec) => state.report[sec.name])
      .map((sec) => {
        const r = state.report[sec.name];
        const box = document.createElement("section");
        box.className = "report-section";
        box.dataset.section = r.name;
        const h = document.createElement("h3");
        h.textContent = r.title;
        const body = document.createElement("div");
        if (r.available) body.innerHTML = r.html; // the report's own fragment: escaped, inline pictures
        else {
          body.className = "na";
          body.textContent = `Not available for this model: ${r.reason}`;
        }
        box.append(h, body);
        return box;
      })
  );
}

async function runReport(sections) {
  if (!state.image) return setStatus("pick an image first", true);
  const seq = ++state.reportSeq;
  supersede("report");
  const image = state.image;
  setStatus(sections ? `report: ${sections.join(", ")}...` : "report: all sections...");
  try {
    const clip = Number($("report-clip").value);
    if (!(clip > 0 && clip <= 100)) throw new Error(`clip ${$("report-clip").value}: a percentile in (0, 100], e.g. 99`);
    const sign = $("report-sign").value || null; // null: each method's default, as the report
    const body = { image, model: state.model, sections, full: $("report-full").checked, sign, clip };
    const job = await follow(await post("/api/jobs/report", body), "report");
    if (job.status !== "done" || seq !== state.reportSeq || image !== state.image) return;
    for (const r of job.result.sections) {
      state.report[r.name] = r;
      const b = $("report-buttons").querySelector(`button[data-section="${r.name}"]`);
      if (b) b.classList.add("done");
    }
    drawReport();
    setStatus(`report: ${job.result.sections.length} section(s) in ${job.result.seconds.toFixed(1)} s`);
  } catch (e) {
    if (seq === state.reportSeq) setStatus(e.message, true);
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
  $("browse-layer").value = $("layer").value; // the browser follows the attribution layer
  if ($("maps").children.length) showMaps();
});
$("browse-layer").addEventListener("change", () => {
  if (state.image) showMaps();
});
$("sign").addEventListener("change", drawOverlay);
$("clip").addEventListener("change", drawOverlay);
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
$("patches-cancel").addEventListener("click", () => cancel("patches"));
$("report-cancel").addEventListener("click", () => cancel("report"));

// Pictures of small models (8x8 digits) are shown enlarged with sharp pixels, not as a dot.
document.addEventListener(
  "load",
  (e) => {
    const img = e.target;
    if (img.tagName === "IMG" && img.closest("figure") && !img.closest("#report-output, #patches")) {
      img.classList.toggle("tiny", img.naturalWidth < 96 && img.naturalHeight < 96);
    }
  },
  true
);

init().catch((e) => setStatus(e.message, true));
