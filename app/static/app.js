// prototok's page: submit a text, watch the job converge, rebuild the text, download the file.
// Plain browser JavaScript, no build step, nothing loaded from elsewhere: it calls the same JSON
// endpoints as any client (POST /v1/encode, GET /v1/jobs/{id}, GET /v1/embeddings/{id}[/text]).
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_STORE = "prototok.apiKey";
const POLL_MS = 400;
const BYTES_PER = { float32: 4, float16: 2, bfloat16: 2 };
let run = 0; // bumped by each submit, so an older job's polling stops

// --- talking to the API ------------------------------------------------------------------

function headers(extra = {}) {
  const key = $("key").value.trim();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers(options.headers) });
  if (response.ok) return response;
  let body = {};
  try { body = await response.json(); } catch (_) { /* not JSON */ }
  const error = new Error(body.message || `${response.status} ${response.statusText}`);
  error.code = body.code || `http_${response.status}`;
  error.status = response.status;
  throw error;
}

function showError(error) {
  const box = $("error");
  let text = error.code ? `[${error.code}] ${error.message}` : String(error.message || error);
  if (error.status === 401) text += " (this server needs an API key: enter it above)";
  box.textContent = text;
  box.hidden = false;
}

// --- input: options, key, dropped files --------------------------------------------------

// The recipes' own values (prototok/recipe.py), shown as placeholders: a field left empty is not
// sent, so the recipe applies (the server's, PROTOTOK_RECIPE, when none is chosen: tuned by default).
const RECIPE_VALUES = {
  tuned: { "max-steps": 1000, seeds: 1, lr: 0.08 },
  paper: { "max-steps": 5000, seeds: 1, lr: 0.01 },
};

function showRecipeValues() {
  const recipe = $("recipe").value || "tuned";
  for (const [id, value] of Object.entries(RECIPE_VALUES[recipe])) $(id).placeholder = `${value} (${recipe})`;
}

function options() {
  const out = {};
  const number = (id, parse) => { const v = $(id).value.trim(); if (v !== "") out[id.replace("-", "_")] = parse(v); };
  number("max-steps", (v) => parseInt(v, 10));
  number("seeds", (v) => parseInt(v, 10));
  number("lr", parseFloat);
  for (const id of ["recipe", "arrangement", "start"]) if ($(id).value) out[id] = $(id).value;
  if ($("storage").value === "compact") out.compact = true;
  else if ($("storage").value) out.storage = $("storage").value;
  if ($("model-m").checked) out.model_m = true; // left out when off: the server's default (false)
  return out;
}

async function loadModels() {
  try {
    const ready = await (await fetch("/readyz")).json();
    const models = ready.models || [];
    for (const name of models) $("model").append(new Option(name, name));
    $("ready").textContent = models.length ? `Workers serve: ${models.join(", ")}.`
      : "No worker is running: a job would wait in the queue until one starts.";
  } catch (_) {
    $("ready").textContent = "The service does not answer /readyz.";
  }
}

// A dropped text file is sent as its own text, not as the box shows it: a textarea's value turns
// "\r\n" and "\r" into "\n", and File.text() drops a BOM. Strict UTF-8; editing the box sends the box.
let droppedFile = null; // { name, text } of the last .txt dropped, until the box is edited

function readUtf8(bytes, name) {
  try {
    return new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch (_) {
    throw Object.assign(new Error(`${name} is not UTF-8 text`), { code: "invalid_input" });
  }
}

function showDropped() {
  $("dropped").textContent = droppedFile
    ? `Sending ${droppedFile.name} byte for byte (${new TextEncoder().encode(droppedFile.text).length} bytes); `
      + "edit the box to send what it shows instead." : "";
  $("dropped").hidden = !droppedFile;
}

async function dropped(file) {
  $("error").hidden = true;
  if (file.name.endsWith(".safetensors")) {
    const body = await file.arrayBuffer();
    const response = await api("/v1/decode", { method: "POST", body,
      headers: { "Content-Type": "application/octet-stream" } });
    const decoded = await response.json();
    showRebuilt(decoded, null);
    $("result").hidden = false;
    $("facts").replaceChildren(...rows([["decoded", file.name], ["model", decoded.model],
      ["tokens", decoded.length]]));
    $("sizes").replaceChildren();
    return;
  }
  const text = readUtf8(await file.arrayBuffer(), file.name);
  droppedFile = { name: file.name, text };
  $("text").value = text;
  showDropped();
}

function setUpDrop() {
  const area = $("text");
  area.addEventListener("input", () => { droppedFile = null; showDropped(); });
  area.addEventListener("dragover", (e) => { e.preventDefault(); area.classList.add("drop"); });
  area.addEventListener("dragleave", () => area.classList.remove("drop"));
  area.addEventListener("drop", (e) => {
    e.preventDefault();
    area.classList.remove("drop");
    const file = e.dataTransfer.files[0];
    if (file) dropped(file).catch(showError);
  });
}

// --- the job: poll, chart, token strip ---------------------------------------------------

async function submit() {
  const text = droppedFile ? droppedFile.text : $("text").value;
  $("error").hidden = true;
  if (!text) { showError(new Error("type or drop a text first")); return; }
  localStorage.setItem(KEY_STORE, $("key").value.trim());
  const body = { text, options: options() };
  if ($("model").value) body.model = $("model").value;
  $("submit").disabled = true;
  try {
    const response = await api("/v1/encode", { method: "POST", body: JSON.stringify(body),
      headers: { "Content-Type": "application/json" } });
    const accepted = await response.json();
    $("result").hidden = true;
    $("job").hidden = false;
    await follow(accepted.job_id, text, ++run);
  } catch (error) {
    showError(error);
  } finally {
    $("submit").disabled = false;
  }
}

async function follow(jobId, text, mine) {
  const started = performance.now();
  for (;;) {
    if (mine !== run) return;
    const job = await (await api(`/v1/jobs/${jobId}`)).json();
    showJob(job, (performance.now() - started) / 1000);
    if (job.status === "finished") return finished(job, text);
    if (job.status === "failed") throw Object.assign(new Error(job.error), { code: job.error_code });
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

function showJob(job, seconds) {
  const p = job.progress;
  $("status").textContent = job.waiting_for_worker ? "waiting for a worker" : job.status;
  $("status").className = `badge ${job.status}`;
  $("step").textContent = p.step;
  $("max").textContent = p.max_steps;
  $("accuracy").textContent = p.accuracy.toFixed(3);
  $("loss").textContent = p.loss == null ? "–" : p.loss.toFixed(3);
  $("elapsed").textContent = seconds.toFixed(1);
  drawChart($("chart"), p.history || [], p.max_steps);
  drawStrip($("strip"), p.tokens || [], p.correct || []);
}

function drawChart(canvas, history, maxSteps) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || canvas.width, height = canvas.clientHeight || canvas.height;
  canvas.width = width * ratio;
  canvas.height = height * ratio;
  canvas.dataset.points = history.length;
  const g = canvas.getContext("2d");
  g.scale(ratio, ratio);
  const pad = { left: 40, right: 48, top: 10, bottom: 24 };
  const w = width - pad.left - pad.right, h = height - pad.top - pad.bottom;
  const last = history.length ? history[history.length - 1].step : 0;
  const xMax = Math.max(maxSteps, last, 1);
  const lossMax = Math.max(...history.map((p) => p.loss), 1e-9);
  const x = (step) => pad.left + (step / xMax) * w;
  g.font = "11px system-ui, sans-serif";
  g.strokeStyle = "#e3e6eb";
  g.fillStyle = "#5f6b7a";
  for (let i = 0; i <= 4; i++) { // grid and both axes' labels
    const y = pad.top + h - (i / 4) * h;
    g.beginPath(); g.moveTo(pad.left, y); g.lineTo(pad.left + w, y); g.stroke();
    g.textAlign = "right"; g.fillText((i / 4).toFixed(2), pad.left - 6, y + 4);
    g.textAlign = "left"; g.fillText((lossMax * i / 4).toPrecision(2), pad.left + w + 6, y + 4);
  }
  g.textAlign = "center";
  for (let i = 0; i <= 4; i++) g.fillText(Math.round(xMax * i / 4), x(xMax * i / 4), height - 6);
  const line = (color, value) => {
    g.strokeStyle = color; g.lineWidth = 2; g.beginPath();
    history.forEach((p, i) => { const y = pad.top + h - value(p) * h; i ? g.lineTo(x(p.step), y) : g.moveTo(x(p.step), y); });
    g.stroke();
  };
  line("#d9822b", (p) => p.loss / lossMax);
  line("#1f8a4c", (p) => p.accuracy);
}

function drawStrip(strip, tokens, correct) {
  const spans = tokens.map((token, i) => {
    const span = document.createElement("span");
    span.textContent = token.replace(/\n/g, "↵\n");
    span.className = correct[i] ? "ok" : "bad";
    span.title = `token ${i}: ${correct[i] ? "right" : "wrong"}`;
    return span;
  });
  strip.replaceChildren(...spans);
  strip.dataset.right = correct.filter(Boolean).length;
}

// --- the result: facts, sizes, rebuild, download -----------------------------------------

function rows(pairs) {
  return pairs.map(([name, value]) => {
    const tr = document.createElement("tr");
    for (const cell of [name, value]) { const td = document.createElement("td"); td.textContent = cell; tr.append(td); }
    return tr;
  });
}

const kb = (n) => (n < 1024 ? `${n} B` : `${(n / 1024).toFixed(1)} KiB`);

async function gzipSize(bytes) {
  if (typeof CompressionStream === "undefined") return null;
  const stream = new Blob([bytes]).stream().pipeThrough(new CompressionStream("gzip"));
  return (await new Response(stream).arrayBuffer()).byteLength;
}

async function finished(job, text) {
  const id = job.embedding_ids[0];
  const emb = await (await api(`/v1/embeddings/${id}`)).json();
  const shared = emb.m_ref != null; // model_m: the file holds e alone; m is the model's, stored once on the server
  const chunks = emb.lengths.length, vectors = (shared ? 1 : 2) * chunks;
  const numbers = Object.values(emb.vectors).flat(2).length;
  const dtype = emb.dtype || "float32";
  const vectorBytes = numbers * (BYTES_PER[dtype] || 4);
  const raw = new TextEncoder().encode(text);
  $("facts").replaceChildren(...rows([
    ["embedding", id], ["model", emb.model], ["tokens", emb.length],
    ["vectors", `${vectors} (${shared ? "e" : "e and m"} per chunk × ${chunks} chunk${chunks > 1 ? "s" : ""}), ${emb.hidden_size} numbers each`],
    ...(shared ? [["m", `the model's shared m (sha256 ${emb.m_ref.sha256.slice(0, 12)}…), stored once per model`]] : []),
    ["tokens per vector", (emb.length / vectors).toFixed(1)],
    ["accuracy of the vectors alone", `${emb.accuracy.toFixed(3)} (${emb.c_tokens}/${emb.length} tokens)`],
    ["stored corrections", emb.corrections], ["steps", emb.steps], ["optimisation", `${emb.seconds.toFixed(1)} s`],
  ]));
  const blob = await (await api(`/v1/embeddings/${id}`, { headers: { Accept: "application/octet-stream" } })).blob();
  const link = $("download");
  if (link.href) URL.revokeObjectURL(link.href);
  link.href = URL.createObjectURL(blob);
  link.download = `${id}.safetensors`;
  link.hidden = false;
  const size = emb.size || {};
  const sizes = [["text, UTF-8", kb(raw.length)], [`vectors, ${dtype}`, kb(size.vectors_bytes ?? vectorBytes)],
                 [".safetensors file (vectors, corrections, metadata)", kb(size.file_bytes ?? blob.size)]];
  if (size.gzip_bytes != null) sizes.push(["text, gzip", kb(size.gzip_bytes)]);
  else { const gz = await gzipSize(raw); if (gz != null) sizes.push(["text, gzip (this browser)", kb(gz)]); }
  if (size.zstd_bytes != null) sizes.push(["text, zstd", kb(size.zstd_bytes)]);
  if (size.bits_per_char != null) sizes.push(["bits per character", size.bits_per_char.toFixed(2)]);
  $("sizes").replaceChildren(...rows(sizes));
  $("rebuild").onclick = () => rebuild(id, text).catch(showError);
  $("decode").hidden = true;
  $("rebuilt").hidden = true;
  $("result").hidden = false;
}

async function rebuild(id, text) {
  const decoded = await (await api(`/v1/embeddings/${id}/text`)).json();
  showRebuilt(decoded, text);
}

function showRebuilt(decoded, original) {
  $("decode-ms").textContent = decoded.decode_ms.toFixed(1);
  $("exact").textContent = original == null ? "" : decoded.text === original ? "exactly the text submitted"
    : "DIFFERS from the text submitted";
  $("decode").hidden = false;
  $("rebuilt").textContent = decoded.text;
  $("rebuilt").hidden = false;
}

// --- start --------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("key").value = localStorage.getItem(KEY_STORE) || "";
  $("key").addEventListener("change", () => localStorage.setItem(KEY_STORE, $("key").value.trim()));
  $("input").addEventListener("submit", (e) => { e.preventDefault(); submit(); });
  $("recipe").addEventListener("change", showRecipeValues);
  showRecipeValues();
  setUpDrop();
  loadModels();
});
