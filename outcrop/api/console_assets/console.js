"use strict";
// Outcrop console: a hash router over views that each load their sections on their own.
// Server values are written with textContent only; no HTML is ever parsed from data.
const SOURCES = __SOURCES__;
const LIST_ENDPOINTS = __LIST_ENDPOINTS__;
const KEY_STORE = "outcrop-key";
const REFRESH_MS = 2000;
const $ = (id) => document.getElementById(id);
const keyInput = $("key");
const statusLine = $("status");

// ---- the key: from a #key= link (never sent to the server) into this tab's sessionStorage ----
function takeKeyFromLink() {
  if (!location.hash.startsWith("#key=")) { return false; }
  sessionStorage.setItem(KEY_STORE, decodeURIComponent(location.hash.slice(5)));
  history.replaceState(null, "", location.pathname);
  keyInput.value = sessionStorage.getItem(KEY_STORE) || "";
  return true;
}
takeKeyFromLink();
keyInput.value = sessionStorage.getItem(KEY_STORE) || "";
function apiKey() { return keyInput.value.trim(); }
$("key-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(KEY_STORE, apiKey());
  me = undefined;
  show(true);
});
$("sign-out").addEventListener("click", () => {
  sessionStorage.removeItem(KEY_STORE);
  keyInput.value = "";
  me = undefined;
  show(true);
});

// ---- HTTP ----
function headers(extra) {
  return {...(apiKey() ? {"Authorization": "Bearer " + apiKey()} : {}), ...(extra || {})};
}
async function call(path, init) {
  const opts = init || {};
  const response = await fetch(path, {cache: "no-store", ...opts, headers: headers(opts.headers)});
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const message = body && (body.message || body.Message || (body.error && body.error.message));
    const error = new Error(message || response.status + " " + response.statusText);
    error.status = response.status;
    error.routeMissing = response.status === 404 && !message;  // no such API here, not "no such model"
    throw error;
  }
  return body;
}
function get(path) { return call(path); }
function send(method, path, body) {
  return call(path, {method, body: body === undefined ? undefined : JSON.stringify(body),
    headers: {"Content-Type": "application/json"}});
}
function sagemaker(target) {
  return call("/", {method: "POST", body: "{}", headers: {"X-Amz-Target": target, "Content-Type": "application/x-amz-json-1.1"}});
}
const enc = encodeURIComponent;

// ---- who is signed in, and what its policy allows (the server decides; this only hides buttons) ----
let me;  // undefined: not looked up; null: unknown; else the key's own entry of GET /outcrop/keys
async function whoami() {
  if (me !== undefined) { return me; }
  me = null;
  if (apiKey()) {
    try {
      const keys = (await get(SOURCES.keys)).keys || [];
      me = keys.find((k) => k.apiKeyPrefix && apiKey().startsWith(k.apiKeyPrefix)) || null;
    } catch (err) { me = null; }
  }
  $("whoami").textContent = me ? "signed in as " + me.name + " (" + policyKind(me.policy) + ")" : "";
  return me;
}
function policyKind(policy) {
  const text = JSON.stringify(policy || {});
  const statements = [].concat((policy && policy.Statement) || []);
  if (statements.some((s) => s.Effect === "Allow" && [].concat(s.Action || []).includes("*"))) { return "admin"; }
  if (text.includes("bedrock:List*")) { return "read-only"; }
  if (text.includes("bedrock:InvokeModel")) { return "invoke-only"; }
  return "custom policy";
}
function wildcard(pattern, value, fold) {
  const p = fold ? pattern.toLowerCase() : pattern;
  const v = fold ? value.toLowerCase() : value;
  const re = new RegExp("^" + p.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".") + "$");
  return re.test(v);
}
function applies(st, action, resource) {
  const any = (list, v, fold) => [].concat(list).some((p) => wildcard(p, v, fold));
  const actionOk = "NotAction" in st ? !any(st.NotAction, action, true) : any(st.Action || [], action, true);
  const resourceOk = "NotResource" in st ? !any(st.NotResource, resource, false) :
    "Resource" in st ? any(st.Resource, resource, false) : true;
  return actionOk && resourceOk;
}
// true/false from the key's own policy (IAM rules: an explicit Deny wins); null when unknown.
function may(action, resource) {
  if (!me || !me.policy) { return null; }
  const statements = [].concat(me.policy.Statement || []).filter((s) => applies(s, action, resource || "*"));
  if (statements.some((s) => s.Effect === "Deny")) { return false; }
  return statements.some((s) => s.Effect === "Allow");
}

// ---- small DOM helpers (text only) ----
function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) { node.textContent = String(text); }
  if (cls) { node.className = cls; }
  return node;
}
function cell(row, value, cls) {
  const td = el("td", value === undefined || value === null ? "" : value, cls);
  row.appendChild(td);
  return td;
}
function button(label, onClick, cls) {
  const b = el("button", label, cls);
  b.type = "button";
  b.addEventListener("click", onClick);
  return b;
}
function link(text, href) { const a = el("a", text); a.href = href; return a; }
function columns(tbody) { return Number(tbody.dataset.columns || 8); }
// Redraws ``node`` with ``draw()``, unless text in it is being selected (copied); a link or button
// that had the keyboard focus has it again afterwards (a refresh must not take it away).
function redraw(node, draw) {
  const selection = getSelection();
  if (selection && selection.toString() && node.contains(selection.anchorNode)) { return; }
  const active = document.activeElement;
  const refocus = active && node.contains(active) ? active.tagName + "|" + active.textContent : null;
  node.replaceChildren();
  draw();
  if (refocus) {
    const same = [...node.querySelectorAll("a, button")].find((n) => n.tagName + "|" + n.textContent === refocus);
    if (same) { same.focus(); }
  }
}
function fill(id, rows, render) {
  const body = $(id);
  redraw(body, () => {
    if (!rows.length) {
      const tr = el("tr");
      cell(tr, "none", "empty").colSpan = columns(body);
      body.appendChild(tr);
    }
    for (const item of rows) { const tr = el("tr"); render(tr, item); body.appendChild(tr); }
  });
}
function bytes(n) {
  if (n === null || n === undefined) { return "-"; }
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i += 1; }
  return (i ? n.toFixed(1) : n.toFixed(0)) + " " + units[i];
}
function ms(value) { return value === null || value === undefined ? "-" : value.toFixed(1) + " ms"; }
function age(iso) {
  if (!iso) { return ""; }
  const then = typeof iso === "number" ? iso * 1000 : Date.parse(iso);  // SageMaker sends epoch seconds
  const s = Math.max(0, (Date.now() - then) / 1000);
  return s < 90 ? s.toFixed(0) + " s" : s < 5400 ? (s / 60).toFixed(0) + " min" : (s / 3600).toFixed(1) + " h";
}
function seconds(s) {
  if (s === null || s === undefined) { return "-"; }
  return s < 90 ? Math.round(s) + " s" : s < 5400 ? Math.round(s / 60) + " min" : (s / 3600).toFixed(1) + " h";
}
function bar(row, done, total, label) {
  const td = cell(row, "");
  if (!total) { td.textContent = label || ""; return td; }
  const outer = el("span", null, "bar");
  const inner = el("span");
  inner.style.width = Math.min(100, 100 * done / total).toFixed(1) + "%";
  outer.appendChild(inner);
  td.appendChild(outer);
  td.appendChild(document.createTextNode(" " + (label || (done + " / " + total))));
  return td;
}
// A failure message keeps its lines: "- reason" lines become bullets under the line before them.
function reasons(parent, text) {
  if (!text) { return; }
  let list = null;
  for (const line of String(text).split("\n")) {
    if (!line.trim()) { continue; }
    const item = line.match(/^\s*[-•*]\s+(.*)$/);
    if (item) {
      if (!list) { list = el("ul"); parent.appendChild(list); }
      list.appendChild(el("li", item[1]));
    } else {
      parent.appendChild(el("div", line));
      list = null;
    }
  }
}
function say(id, text, cls) { const p = $(id); p.textContent = text; p.className = cls || ""; }

// ---- sections: each loads on its own; a refused one says why in place ----
function badKey(err) { return /API key is not valid|Missing credentials/.test(err.message || ""); }
// SageMaker's dialect answers AccessDenied with 400, so the message counts too.
function denied(err) { return err.status === 403 || /is not authorized to perform/.test(err.message || ""); }
function refusal(err) {
  if (!apiKey()) { return "enter an API key above"; }
  if (badKey(err)) { return "the key is not valid"; }
  if (denied(err)) { return "not allowed for this key"; }
  if (err.routeMissing) { return "not available on this server"; }
  return "cannot read: " + err.message;
}
function refused(target, err) {
  const node = typeof target === "string" ? $(target) : target;
  node.replaceChildren();
  if (node.tagName === "TBODY") {
    const tr = el("tr");
    const td = cell(tr, refusal(err), "denied");
    td.colSpan = columns(node);
    td.title = err.message;
    node.appendChild(tr);
  } else {
    const p = el("p", refusal(err), "denied");
    p.title = err.message;
    node.appendChild(p);
  }
}
// A read the key's own policy refuses is not sent: it fails here as the server would answer.
async function allowed(action, load) {
  await whoami();
  if (may(action, "*") === false) {
    const err = new Error("the key's policy does not allow " + action); err.status = 403; throw err;
  }
  return load();
}
let failures = [];
async function section(target, load, render) {
  try {
    render(await load());
  } catch (err) {
    if (target === "keys") { $("keys-create").hidden = true; }
    refused(target, err);
    failures.push(err);
  }
}

// ---- renderers shared by views ----
function renderImport(tr, j) {
  cell(tr, j.jobName);
  const model = cell(tr, "");
  if (j.status === "Completed" && j.importedModelName) { model.appendChild(link(j.importedModelName, "#model/" + enc(j.importedModelName))); }
  else { model.textContent = j.importedModelName || ""; }
  cell(tr, j.status, j.status);
  if (j.status === "InProgress") {
    const phase = j.phase || "queued";
    bar(tr, j.bytesDone || 0, j.bytesTotal || 0, j.bytesTotal ? phase + " " + bytes(j.bytesDone || 0) + " / " + bytes(j.bytesTotal) : phase);
  } else {
    cell(tr, j.status, j.status);  // Completed or Failed in words: no bar, no raw byte counts
  }
  cell(tr, age(j.creationTime));
  reasons(cell(tr, "", "wrap reasons"), j.failureMessage || "");
}
// The listing holds neither progress nor failure reasons: a job not Completed is asked for its detail.
function importDetail(j) {
  return j.status === "Completed" ? j : get(SOURCES.importDetail + enc(j.jobName)).catch(() => j);
}
async function loadImports() {
  const list = await get(SOURCES.imports);
  return Promise.all((list.modelImportJobSummaries || []).map(importDetail));
}
const ACTIVE_BATCH = ["Submitted", "Validating", "Scheduled", "InProgress"];
function outputOf(b) {
  return (b.outputDataConfig && b.outputDataConfig.s3OutputDataConfig && b.outputDataConfig.s3OutputDataConfig.s3Uri) || "";
}
function renderBatch(tr, b, withActions) {
  cell(tr, b.jobName); cell(tr, b.modelId); cell(tr, b.status, b.status);
  bar(tr, b.processedRecordCount || 0, b.totalRecordCount || 0);
  cell(tr, (b.successRecordCount || 0) + " ok / " + (b.errorRecordCount || 0) + " errors");
  cell(tr, age(b.submitTime));
  const out = cell(tr, "", "path");
  if (outputOf(b)) { out.appendChild(el("code", outputOf(b))); }
  cell(tr, b.message || "", "wrap");
  if (withActions) {
    const td = cell(tr, "");
    if (ACTIVE_BATCH.includes(b.status) && may("bedrock:StopModelInvocationJob", "*") !== false) {
      td.appendChild(button("Stop", async () => {
        try {
          await send("POST", "/model-invocation-job/" + enc(b.jobArn || b.jobName) + "/stop");
          say("batch-result", "Stopping " + b.jobName + ".", "ok");
        } catch (err) { say("batch-result", "Cannot stop " + b.jobName + ": " + err.message, "error"); }
        refreshView();
      }));
    }
  }
}
function renderCopy(tr, c, withModel) {
  cell(tr, c.copyId);
  if (withModel) { const td = cell(tr, ""); td.appendChild(link(c.modelName, "#model/" + enc(c.modelName))); }
  cell(tr, c.state, c.state); cell(tr, c.inFlight);
  cell(tr, age(c.startedAt)); cell(tr, c.lastUsedAt ? age(c.lastUsedAt) + " ago" : ""); cell(tr, c.url || "", "path");
}

// ---- charts: inline SVG, drawn here (no library) ----
const SVG = "http://www.w3.org/2000/svg";
const PALETTE = ["#2563eb", "#b42318", "#2f7d4f", "#a15c07", "#7c3aed", "#0e7490", "#be185d", "#4b5563"];
function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) { node.setAttribute(k, String(v)); }
  return node;
}
function fmt(v, unit) {
  if (v === null || v === undefined) { return "-"; }
  if (unit === "ms" && Math.abs(v) >= 10000) { return (v / 1000).toFixed(1) + " s"; }
  if (Math.abs(v) >= 10000) { return (v / 1000).toFixed(0) + "k" + (unit ? " " + unit : ""); }
  const n = Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1) : v.toFixed(2).replace(/\.?0+$/, "") || "0";
  return n + (unit ? " " + unit : "");
}
// The axis top: the next 1, 2 or 5 times a power of ten (6.2 -> 10, 0.3 -> 0.5).
function niceCeiling(v) {
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  return [1, 2, 5, 10].map((m) => m * p).find((c) => c >= v * (1 - 1e-9));
}
// lines: [{name, values}] over timestamps (epoch seconds); null values leave gaps.
function chart(title, timestamps, lines, unit) {
  const W = 320, H = 140, L = 40, R = 8, T = 8, B = 20;
  const figure = el("figure", null, "chart");
  figure.appendChild(el("figcaption", title));
  const all = lines.flatMap((l) => l.values).filter((v) => v !== null && v !== undefined);
  const max = Math.max(1e-9, ...all);
  const top = all.length && max > 1e-9 ? niceCeiling(max) : 1;
  const last = lines.map((l) => l.name + " " + fmt([...l.values].reverse().find((v) => v !== null && v !== undefined), unit));
  const box = svg("svg", {viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title + ", last hour: " + (all.length ? last.join(", ") : "no data")});
  const t = svg("title"); t.textContent = title; box.appendChild(t);
  const n = timestamps.length;
  const x = (i) => L + (n > 1 ? i * (W - L - R) / (n - 1) : 0);
  const y = (v) => T + (H - T - B) * (1 - v / top);
  for (const frac of [0, 0.5, 1]) {
    box.appendChild(svg("line", {x1: L, x2: W - R, y1: y(top * frac), y2: y(top * frac), stroke: "#e5e7eb"}));
    const label = svg("text", {x: L - 4, y: y(top * frac) + 4, "text-anchor": "end", "font-size": 10, fill: "#555"});
    label.textContent = fmt(top * frac); box.appendChild(label);
  }
  const minutes = n ? Math.round((timestamps[n - 1] - timestamps[0]) / 60) : 60;
  for (const [xx, text, anchor] of [[L, "-" + minutes + " min", "start"], [W - R, "now", "end"]]) {
    const label = svg("text", {x: xx, y: H - 5, "text-anchor": anchor, "font-size": 10, fill: "#555"});
    label.textContent = text; box.appendChild(label);
  }
  lines.forEach((line, k) => {
    let points = [];
    const flush = () => {
      if (points.length === 1) {
        box.appendChild(svg("circle", {cx: points[0][0], cy: points[0][1], r: 1.8, fill: PALETTE[k % PALETTE.length]}));
      } else if (points.length > 1) {
        box.appendChild(svg("polyline", {points: points.map((p) => p.join(",")).join(" "), fill: "none",
          stroke: PALETTE[k % PALETTE.length], "stroke-width": 1.6, "stroke-linejoin": "round"}));
      }
      points = [];
    };
    line.values.forEach((v, i) => {
      if (v === null || v === undefined) { flush(); } else { points.push([x(i).toFixed(1), y(v).toFixed(1)]); }
    });
    flush();
  });
  figure.appendChild(box);
  const legend = el("div", null, "legend");
  lines.forEach((line, k) => {
    const item = el("span");
    const swatch = el("span", null, "swatch");
    swatch.style.background = PALETTE[k % PALETTE.length];
    item.appendChild(swatch);
    item.appendChild(document.createTextNode(last[k]));
    legend.appendChild(item);
  });
  figure.appendChild(legend);
  if (!all.length) { figure.appendChild(el("p", "no data in the last hour", "empty")); }
  return figure;
}
function drawCharts(target, stats, model) {
  const s = stats.series || {};
  const ts = stats.timestamps || [];
  const line = (name, key) => ({name, values: s[key] || ts.map(() => null)});
  const copies = Object.entries(stats.copies || {}).filter(([name]) => !model || name === model)
    .map(([name, values]) => ({name, values}));
  const scope = model ? " (all models)" : "";
  const figures = [
    chart("Requests per " + (stats.stepSeconds || 10) + " s" + scope, ts, [line("requests", "requests")]),
    chart("Errors and throttles" + scope, ts, [line("errors", "errors"), line("throttles", "throttles")]),
    chart("Latency" + scope, ts, [line("p50", "latencyP50Ms"), line("p95", "latencyP95Ms")], "ms"),
    chart("Time to first token" + scope, ts, [line("p50", "ttftP50Ms"), line("p95", "ttftP95Ms")], "ms"),
    chart("Tokens per second" + scope, ts, [line("tokens/s", "tokensPerSecond")]),
    chart(model ? "Copies of " + model : "Copies per model", ts, copies.length ? copies : [{name: "copies", values: ts.map(() => null)}]),
    chart("Queue depth" + scope, ts, [line("queued", "queueDepth")]),
  ];
  $(target).replaceChildren(...figures);
}

// ---- confirm dialog ----
function confirmAction(text, label) {
  const dialog = $("confirm");
  $("confirm-text").textContent = text;
  $("confirm-ok").textContent = label;
  return new Promise((resolve) => {
    const done = (value) => {
      $("confirm-ok").removeEventListener("click", ok);
      $("confirm-cancel").removeEventListener("click", cancel);
      dialog.removeEventListener("cancel", cancel);
      if (dialog.open) { dialog.close(); }
      resolve(value);
    };
    const ok = () => done(true);
    const cancel = () => done(false);
    $("confirm-ok").addEventListener("click", ok);
    $("confirm-cancel").addEventListener("click", cancel);
    dialog.addEventListener("cancel", cancel);  // Escape
    dialog.showModal();
    $("confirm-cancel").focus();
  });
}

// ---- copy buttons ----
document.addEventListener("click", async (ev) => {
  const b = ev.target.closest && ev.target.closest("button.copy");
  if (!b) { return; }
  const text = $(b.dataset.copy).textContent;
  const label = b.textContent;
  try { await navigator.clipboard.writeText(text); b.textContent = "Copied"; }
  catch (err) {  // no clipboard (not a secure context): select the text for Ctrl+C
    const range = document.createRange(); range.selectNodeContents($(b.dataset.copy));
    const sel = getSelection(); sel.removeAllRanges(); sel.addRange(range);
    b.textContent = "Selected: press Ctrl+C";
  }
  setTimeout(() => { b.textContent = label; }, 1500);
});

// ---- views ----
const views = {};

views.overview = {auto: true, load: () => {
  const copiesLoad = get(SOURCES.copies);
  copiesLoad.catch(() => null);
  return [
    section("models", async () => [await get(SOURCES.models), await copiesLoad.catch(() => null)], ([models, copies]) => {
      const byModel = {};
      for (const c of (copies && copies.copies) || []) { (byModel[c.modelName] = byModel[c.modelName] || []).push(c); }
      fill("models", models.modelSummaries || [], (tr, m) => {
        const mine = byModel[m.modelName] || [];
        const name = cell(tr, ""); name.appendChild(link(m.modelName, "#model/" + enc(m.modelName)));
        cell(tr, m.modelArchitecture); cell(tr, m.instructSupported ? "yes" : "no");
        cell(tr, copies ? mine.filter((c) => c.state === "Ready").length + " ready / " + mine.length : "-");
        cell(tr, copies ? mine.reduce((n, c) => n + c.inFlight, 0) : "-"); cell(tr, age(m.creationTime));
      });
    }),
    section("copies", () => copiesLoad, (copies) => fill("copies", copies.copies || [], (tr, c) => renderCopy(tr, c, true))),
    section("imports", loadImports, (details) => fill("imports", details, renderImport)),
    section("batches", () => get(SOURCES.batches), (b) => fill("batches", b.invocationJobSummaries || [], (tr, j) => renderBatch(tr, j, false))),
    section("endpoints", async () => [await sagemaker(LIST_ENDPOINTS), await get(SOURCES.endpointMetrics).catch(() => null)],
      ([endpoints, metrics]) => {
        const byEndpoint = {};
        for (const m of (metrics && metrics.endpoints) || []) { (byEndpoint[m.EndpointName] = byEndpoint[m.EndpointName] || []).push(m); }
        fill("endpoints", endpoints.Endpoints || [], (tr, e) => {
          const rows = byEndpoint[e.EndpointName] || [];
          const sum = (k) => rows.reduce((n, r) => n + r[k], 0);
          const mean = (k) => { const w = rows.filter((r) => r[k] !== null); const n = w.reduce((a, r) => a + r.Invocations, 0);
            return n ? w.reduce((a, r) => a + r[k] * r.Invocations, 0) / n : null; };
          cell(tr, e.EndpointName); cell(tr, e.EndpointStatus, e.EndpointStatus);
          cell(tr, metrics ? sum("Invocations") : "-");
          cell(tr, metrics ? sum("Invocation4XXErrors") + " / " + sum("Invocation5XXErrors") : "-");
          cell(tr, metrics ? ms(mean("ModelLatencyMs")) : "-"); cell(tr, metrics ? ms(mean("OverheadLatencyMs")) : "-");
          cell(tr, age(e.CreationTime));
        });
      }),
  ];
}};

let modelName = "";
let modelShown = null;  // the detail last drawn, so the action forms are not reset while typed in
views.model = {auto: true, load: () => {
  const name = modelName;
  const detail = get(SOURCES.modelDetail + enc(name));
  detail.catch(() => null);
  return [
    section("model-detail", () => detail.catch((err) => { $("model-actions").hidden = true; throw err; }), (m) => {
      $("model-title").textContent = "Model " + m.modelName;
      $("model-actions").hidden = false;
      const dl = el("dl");
      const scaling = m.scaling || {};
      const rows = [
        ["Name", m.modelName], ["ARN", m.modelArn], ["Architecture", m.architecture], ["Model type", m.modelType],
        ["Parameters", m.parameterCount ? Number(m.parameterCount).toLocaleString("en-US") : "-"], ["dtype", m.dtype],
        ["Context length", m.contextLength], ["Size", bytes(m.sizeBytes)], ["Memory per copy", bytes(m.memoryEstimateBytes)],
        ["Chat template", m.instructSupported ? "yes" : "no"], ["Kind", m.kind],
        ["Import job", m.jobName], ["Source", m.source], ["Imported", m.creationTime ? m.creationTime + " (" + age(m.creationTime) + " ago)" : "-"],
        ["Min / max copies", m.scaling ? scaling.minCopies + " / " + scaling.maxCopies +
          (scaling.source === "api" ? " (set here or with `outcrop models scaling`)" : scaling.source === "config" ? " (server configuration)" : "") : "-"],
        ["Scale to zero after", !m.scaling ? "-" : scaling.scaleToZeroSeconds === null || scaling.scaleToZeroSeconds === undefined
          ? "never: kept warm (min copies or warmed)" : seconds(scaling.scaleToZeroSeconds) + " idle"],
        ["Time until scale to zero", !m.scaling ? "-" : scaling.scaleToZeroInSeconds !== null && scaling.scaleToZeroInSeconds !== undefined
          ? seconds(scaling.scaleToZeroInSeconds) + (scaling.idleSeconds ? " (idle for " + seconds(scaling.idleSeconds) + ")" : "")
          : scaling.scaleToZeroSeconds === null ? "kept warm" : "no copy running"],
      ];
      if (m.embeddingDimension) { rows.push(["Embedding dimension", m.embeddingDimension]); }
      for (const [k, v] of rows) { dl.appendChild(el("dt", k)); dl.appendChild(el("dd", v === null || v === undefined ? "-" : v)); }
      $("model-detail").replaceChildren(dl);
      const first = !modelShown || modelShown.modelName !== m.modelName;
      modelShown = m;
      if (first) {
        $("min-copies").value = m.scaling ? scaling.minCopies : 0;
        $("max-copies").value = m.scaling ? scaling.maxCopies : 1;
        if (scaling.maxCopiesCap) { $("max-copies").max = scaling.maxCopiesCap; $("min-copies").max = scaling.maxCopiesCap; }
        showActions(m);
      }
    }),
    section("model-copies", async () => (await get(SOURCES.copies)).copies || [], (copies) =>
      fill("model-copies", copies.filter((c) => c.modelName === name), (tr, c) => renderCopy(tr, c, false))),
    section("model-charts", () => allowed("outcrop:GetStats", () => get(SOURCES.stats)), (stats) => drawCharts("model-charts", stats, name)),
  ];
}};
function showActions(m) {
  const allowed = {
    "warm-form": may("outcrop:WarmModel", m.modelArn),
    "scaling-form": may("outcrop:UpdateModelScaling", m.modelArn),
    "delete-model": may("bedrock:DeleteImportedModel", m.modelArn),
  };
  for (const [id, ok] of Object.entries(allowed)) {
    const node = $(id);
    node.hidden = ok === false;
    let note = $(id + "-denied");
    if (!note) { note = el("p", "", "denied"); note.id = id + "-denied"; node.after(note); }
    note.textContent = ok === false ? {"warm-form": "Warm", "scaling-form": "Setting min/max copies", "delete-model": "Delete"}[id] + ": not allowed for this key" : "";
    note.hidden = ok !== false;
  }
}
$("warm-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const copies = Number($("warm-copies").value);
  say("model-action-result", "Starting " + copies + " cop" + (copies === 1 ? "y" : "ies") + " of " + modelName + "…");
  try {
    const out = await send("POST", SOURCES.modelDetail + enc(modelName) + "/warm", {copies});
    say("model-action-result", "Warm: " + (out.copies || []).filter((c) => c.state === "Ready").length + " cop(ies) ready.", "ok");
  } catch (err) { say("model-action-result", "Warm failed: " + err.message, "error"); }
  refreshView();
});
$("scaling-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const body = {minCopies: Number($("min-copies").value), maxCopies: Number($("max-copies").value)};
  try {
    await send("PUT", SOURCES.modelDetail + enc(modelName) + "/scaling", body);
    say("model-action-result", "Saved: min " + body.minCopies + ", max " + body.maxCopies + " copies.", "ok");
  } catch (err) {
    say("model-action-result", "Cannot set scaling: " + (err.routeMissing ? "not available on this server" : err.message), "error");
  }
  refreshView();
});
$("delete-model").addEventListener("click", async () => {
  const name = modelName;
  if (!await confirmAction("Delete the imported model " + name + "? Its copies stop and it is removed from this server; this cannot be undone.", "Delete " + name)) {
    $("delete-model").focus();
    return;
  }
  say("model-action-result", "Deleting " + name + ": its copies drain first…");
  try {
    await send("DELETE", "/imported-models/" + enc(name));
    say("model-action-result", "Deleted " + name + ".", "ok");
    location.hash = "#overview";
  } catch (err) { say("model-action-result", "Delete failed: " + err.message, "error"); }
});

views.charts = {auto: true, every: 10000, load: () => [section("charts", () => allowed("outcrop:GetStats", () => get(SOURCES.stats)), (stats) => drawCharts("charts", stats, null))]};

// ---- playground ----
let pgModels = [];
views.playground = {auto: false, load: () => [section("playground-denied", async () => {
  const models = (await get(SOURCES.models)).modelSummaries || [];
  await whoami();
  return models.filter((m) => may("bedrock:InvokeModel", m.modelArn) !== false);
}, (models) => {
  pgModels = models;
  const select = $("pg-model");
  const keep = select.value;
  select.replaceChildren(...models.map((m) => { const o = el("option", m.modelName); o.value = m.modelName; return o; }));
  if (models.some((m) => m.modelName === keep)) { select.value = keep; }
  $("playground-form").hidden = !models.length;
  $("playground-denied").replaceChildren();
  if (!models.length) { $("playground-denied").appendChild(el("p", apiKey() ? "not allowed for this key: it may invoke no model" : "enter an API key above", "denied")); }
  else {
    const chat = models.find((m) => m.modelName === select.value);
    if (chat && !keep) { $("pg-mode").value = chat.instructSupported ? "chat" : "completion"; }
  }
  updateCode();
})]};
function pgRequest() {
  const mode = $("pg-mode").value;
  const params = {temperature: Number($("pg-temperature").value), top_p: Number($("pg-top-p").value), max_tokens: Number($("pg-max-tokens").value)};
  const model = $("pg-model").value;
  if (mode === "chat") {
    const messages = [];
    if ($("pg-system").value.trim()) { messages.push({role: "system", content: $("pg-system").value}); }
    messages.push({role: "user", content: $("pg-prompt").value});
    return {path: "/v1/chat/completions", body: {model, messages, ...params, stream: true, stream_options: {include_usage: true}}};
  }
  return {path: "/v1/completions", body: {model, prompt: $("pg-prompt").value, ...params, stream: true, stream_options: {include_usage: true}}};
}
const BOTO_KEYS = "# OUTCROP_ACCESS_KEY_ID / OUTCROP_SECRET_ACCESS_KEY: your key's access key id and secret\n" +
  "# (shown once by the Keys view or `outcrop keys create`)\n";
const py = (v) => JSON.stringify(v);  // JSON strings and numbers are valid Python literals
function updateCode() {
  const {body} = pgRequest();
  const origin = location.origin;
  const chat = $("pg-mode").value === "chat";
  const creds = '\n    endpoint_url="' + origin + '", region_name="us-east-1",\n' +
    '    aws_access_key_id=os.environ["OUTCROP_ACCESS_KEY_ID"], aws_secret_access_key=os.environ["OUTCROP_SECRET_ACCESS_KEY"])';
  let boto;
  if (chat) {
    const system = body.messages.filter((m) => m.role === "system").map((m) => ({text: m.content}));
    boto = "import os, boto3\n\n" + BOTO_KEYS + "runtime = boto3.client(\"bedrock-runtime\", " + creds + "\n" +
      "stream = runtime.converse_stream(\n    modelId=" + py(body.model) + ",\n" +
      (system.length ? "    system=" + py(system) + ",\n" : "") +
      "    messages=[{\"role\": \"user\", \"content\": [{\"text\": " + py(body.messages[body.messages.length - 1].content) + "}]}],\n" +
      "    inferenceConfig={\"temperature\": " + body.temperature + ", \"topP\": " + body.top_p + ", \"maxTokens\": " + body.max_tokens + "},\n)\n" +
      "for event in stream[\"stream\"]:\n    if \"contentBlockDelta\" in event:\n        print(event[\"contentBlockDelta\"][\"delta\"][\"text\"], end=\"\", flush=True)\n";
  } else {
    boto = "import json, os, boto3\n\n" + BOTO_KEYS + "runtime = boto3.client(\"bedrock-runtime\", " + creds + "\n" +
      "response = runtime.invoke_model_with_response_stream(\n    modelId=" + py(body.model) + ",\n" +
      "    body=json.dumps({\"prompt\": " + py(body.prompt) + ", \"max_gen_len\": " + body.max_tokens +
      ", \"temperature\": " + body.temperature + ", \"top_p\": " + body.top_p + "}),\n)\n" +
      "for event in response[\"body\"]:\n    chunk = json.loads(event[\"chunk\"][\"bytes\"])\n    print(chunk.get(\"generation\", \"\"), end=\"\", flush=True)\n";
  }
  const args = chat ? "    messages=" + py(body.messages) + ",\n" : "    prompt=" + py(body.prompt) + ",\n";
  const openai = "import os\nfrom openai import OpenAI\n\n# OUTCROP_API_KEY: your API key (the Keys view or `outcrop keys create`)\nclient = OpenAI(base_url=\"" + origin + "/v1\", api_key=os.environ[\"OUTCROP_API_KEY\"])\n" +
    "stream = client." + (chat ? "chat.completions" : "completions") + ".create(\n    model=" + py(body.model) + ",\n" + args +
    "    temperature=" + body.temperature + ", top_p=" + body.top_p + ", max_tokens=" + body.max_tokens + ",\n    stream=True,\n)\n" +
    "for chunk in stream:\n    if chunk.choices:\n        print(chunk.choices[0]." + (chat ? "delta.content or \"\"" : "text") + ", end=\"\", flush=True)\n";
  $("code-boto3").textContent = boto;
  $("code-openai").textContent = openai;
  $("pg-system-row").hidden = !chat;
}
$("pg-model").addEventListener("change", () => {  // a model without a chat template takes completions
  const chosen = pgModels.find((m) => m.modelName === $("pg-model").value);
  if (chosen) { $("pg-mode").value = chosen.instructSupported ? "chat" : "completion"; }
});
for (const id of ["pg-model", "pg-mode", "pg-temperature", "pg-top-p", "pg-max-tokens", "pg-system", "pg-prompt"]) {
  $(id).addEventListener("input", updateCode);
  $(id).addEventListener("change", updateCode);
}
let pgAbort = null;
$("pg-stop").addEventListener("click", () => { if (pgAbort) { pgAbort.abort(); } });
$("playground-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  if (pgAbort) { return; }  // one stream at a time (Send stays enabled so the focus stays on it)
  const {path, body} = pgRequest();
  const chat = path.includes("chat");
  const output = $("pg-output");
  output.textContent = "";
  say("pg-stats", "waiting for the first token… (a model scaled to zero starts a copy first)");
  $("pg-stop").disabled = false;
  output.setAttribute("aria-busy", "true");  // read out once complete, not token by token
  pgAbort = new AbortController();
  const started = performance.now();
  let first = null, pieces = 0, usage = null, failed = null;
  try {
    const response = await fetch(path, {method: "POST", body: JSON.stringify(body), signal: pgAbort.signal,
      headers: headers({"Content-Type": "application/json", "Accept": "text/event-stream"})});
    if (!response.ok) {
      const err = await response.json().catch(() => ({}));
      throw new Error((err.error && err.error.message) || err.message || response.status + " " + response.statusText);
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) { break; }
      buffer += decoder.decode(value, {stream: true});
      let cut;
      while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
        const data = event.split(/\r?\n/).filter((l) => l.startsWith("data:")).map((l) => l.slice(5).replace(/^ /, "")).join("\n");
        if (!data || data === "[DONE]") { continue; }
        const chunk = JSON.parse(data);
        if (chunk.error) { failed = chunk.error.message || JSON.stringify(chunk.error); continue; }
        if (chunk.usage) { usage = chunk.usage; }
        const choice = (chunk.choices || [])[0];
        const text = choice ? (chat ? (choice.delta && choice.delta.content) : choice.text) : "";
        if (text) {
          if (first === null) {
            first = performance.now();
            say("pg-stats", "TTFT " + (first - started).toFixed(0) + " ms · streaming…");
          }
          pieces += 1;
          output.textContent += text;
        }
      }
    }
  } catch (err) {
    failed = err.name === "AbortError" ? "stopped" : err.message;
  }
  const end = performance.now();
  const tokens = usage ? usage.completion_tokens : pieces;
  const parts = [];
  if (first !== null) {
    parts.push("TTFT " + (first - started).toFixed(0) + " ms");
    parts.push((end > first && tokens > 1 ? ((tokens - 1) / ((end - first) / 1000)).toFixed(1) : "-") + " tokens/s");
    parts.push(tokens + " tokens in " + ((end - started) / 1000).toFixed(2) + " s");
  }
  if (failed) { parts.push(failed === "stopped" ? "stopped" : "error: " + failed); }
  say("pg-stats", parts.join(" · ") || "no tokens", failed && failed !== "stopped" ? "error" : "");
  if (document.activeElement === $("pg-stop")) { $("pg-send").focus(); }
  $("pg-stop").disabled = true;
  output.setAttribute("aria-busy", "false");
  pgAbort = null;
});

// ---- import ----
views.import = {auto: true, load: () => {
  const refusedImport = may("bedrock:CreateModelImportJob", "*") === false;
  $("import-form").hidden = refusedImport;
  $("import-denied").textContent = refusedImport ? "Importing: not allowed for this key" : "";
  return [section("import-jobs", loadImports, (details) => fill("import-jobs", details, renderImport))];
}};
$("import-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const name = $("import-name").value.trim();
  const stamp = new Date().toISOString().replace(/[-:T]/g, "").slice(0, 14);
  const jobName = $("import-job").value.trim() || ("import-" + name + "-" + stamp).slice(0, 63);
  let source = $("import-source").value.trim();
  try {
    const out = await send("POST", "/model-import-jobs", {jobName, importedModelName: name,
      modelDataSource: {s3DataSource: {s3Uri: source}}});
    say("import-result", "Import job " + jobName + " started (" + out.jobArn + "); its progress shows below.", "ok");
    $("import-job").value = "";
  } catch (err) { say("import-result", "Cannot start the import: " + err.message, "error"); }
  refreshView();
});

// ---- batch jobs ----
views.batches = {auto: true, load: () => [section("batch-jobs", () => get(SOURCES.batches),
  (b) => fill("batch-jobs", b.invocationJobSummaries || [], (tr, j) => renderBatch(tr, j, true)))]};

// ---- knowledge bases (bedrock-agent) ----
const ACTIVE_INGESTION = ["STARTING", "IN_PROGRESS", "STOPPING"];
const INGESTION_DONE = ["numberOfNewDocumentsIndexed", "numberOfModifiedDocumentsIndexed", "numberOfDocumentsFailed"];
const INGESTION_COUNTS = [["numberOfDocumentsScanned", "scanned"], ["numberOfNewDocumentsIndexed", "new"],
  ["numberOfModifiedDocumentsIndexed", "modified"], ["numberOfDocumentsDeleted", "deleted"], ["numberOfDocumentsFailed", "failed"]];
function kbPath(kbId, dsId) {
  return "/knowledgebases/" + enc(kbId) + "/datasources/" + (dsId ? enc(dsId) + "/ingestionjobs/" : "");
}
async function listAll(path, key, body) {  // every page of a bedrock-agent List call
  const out = [];
  let token = null;
  do {
    const page = await send("POST", path, {maxResults: 100, ...(body || {}), ...(token ? {nextToken: token} : {})});
    out.push(...(page[key] || []));
    token = page.nextToken || null;
  } while (token);
  return out;
}
// The latest job of a data source, whole (a summary holds no failure reasons); null if never synced.
async function latestJob(kbId, dsId) {
  const page = await send("POST", kbPath(kbId, dsId), {maxResults: 1, sortBy: {attribute: "STARTED_AT", order: "DESCENDING"}});
  const job = (page.ingestionJobSummaries || [])[0];
  if (!job) { return null; }
  return get(kbPath(kbId, dsId) + enc(job.ingestionJobId)).then((d) => d.ingestionJob).catch(() => job);
}
async function loadKnowledge() {
  const kbs = await allowed("bedrock:ListKnowledgeBases", () => listAll("/knowledgebases/", "knowledgeBaseSummaries"));
  const models = await get(SOURCES.models).catch(() => ({}));
  modelNames = new Map((models.modelSummaries || []).map((m) => [m.modelArn, m.modelName]));
  return Promise.all(kbs.map(async (summary) => {
    const id = summary.knowledgeBaseId;
    const kb = await get("/knowledgebases/" + enc(id)).then((d) => d.knowledgeBase).catch(() => summary);
    let sources;
    try {
      sources = await Promise.all((await listAll(kbPath(id), "dataSourceSummaries")).map(async (ds) => {
        try { return {ds, job: await latestJob(id, ds.dataSourceId)}; } catch (err) { return {ds, job: null, error: err}; }
      }));
    } catch (err) { sources = err; }
    return {kb, sources};
  }));
}
let modelNames = new Map();  // imported model ARN -> name, for the embedding model's line
function modelOf(arn) { return arn ? modelNames.get(arn) || String(arn).split("/").pop() : "-"; }
function ingestionCell(tr, job) {
  if (!job) { cell(tr, "never synced", "empty"); return; }
  const stats = job.statistics || {};
  if (ACTIVE_INGESTION.includes(job.status)) {
    const done = INGESTION_DONE.reduce((n, k) => n + (stats[k] || 0), 0);
    const total = stats.numberOfDocumentsScanned || 0;
    bar(tr, done, total, total ? done + " / " + total + " documents" : "scanning");
  } else {
    cell(tr, INGESTION_COUNTS.map(([k, word]) => (stats[k] || 0) + " " + word).join(" · "));
  }
}
function renderSource(tr, kb, {ds, job, error}) {
  cell(tr, ds.name); cell(tr, ds.status, ds.status);
  if (error) { refused(cell(tr, ""), error); cell(tr, ""); cell(tr, ""); cell(tr, ""); cell(tr, ""); return; }
  cell(tr, job ? job.status : "", job ? job.status : "");
  ingestionCell(tr, job);
  cell(tr, job ? age(job.startedAt) + " ago" : "");
  reasons(cell(tr, "", "wrap reasons"), (job && job.failureReasons || []).map((r) => "- " + r).join("\n"));
  const td = cell(tr, "");
  const active = job && ACTIVE_INGESTION.includes(job.status);
  const arn = kb.knowledgeBaseArn || "*";  // the server checks both actions on the knowledge base's ARN
  if (!active && may("bedrock:StartIngestionJob", arn) !== false) {
    td.appendChild(button("Sync " + ds.name, async () => {
      try {
        await send("PUT", kbPath(kb.knowledgeBaseId, ds.dataSourceId), {});
        say("kb-result", "Syncing " + ds.name + " into " + kb.name + ".", "ok");
      } catch (err) { say("kb-result", "Cannot sync " + ds.name + ": " + err.message, "error"); }
      refreshView();
    }));
  }
  if (active && job.status !== "STOPPING" && may("bedrock:StopIngestionJob", arn) !== false) {
    td.appendChild(button("Stop " + ds.name, async () => {
      try {
        await send("POST", kbPath(kb.knowledgeBaseId, ds.dataSourceId) + enc(job.ingestionJobId) + "/stop", {});
        say("kb-result", "Stopping the sync of " + ds.name + ".", "ok");
      } catch (err) { say("kb-result", "Cannot stop " + ds.name + ": " + err.message, "error"); }
      refreshView();
    }, "danger"));
  }
}
const KB_SOURCE_COLUMNS = ["data source", "status", "last sync", "documents", "started", "failures", "action"];
function renderKnowledge(items) {
  const busy = items.some(({sources}) => Array.isArray(sources) && sources.some(({job}) => job && ACTIVE_INGESTION.includes(job.status)));
  views.knowledge.every = busy ? REFRESH_MS : 10000;  // a running sync is followed closely
  redraw($("kb-list"), () => {
    if (!items.length) {
      const p = el("p", "No knowledge bases yet. Create one on an imported embedding model and add a folder of documents: "
        + "outcrop kb create NAME --model EMBEDDING-MODEL, outcrop kb add-source NAME SOURCE --uri FOLDER, then outcrop kb sync NAME "
        + "(outcrop kb --help has examples; docs/knowledge-bases.md is the guide).", "empty");
      $("kb-list").appendChild(p);
      return;
    }
    for (const {kb, sources} of items) {
      const box = el("section", null, "kb");
      box.appendChild(el("h3", kb.name));
      const facts = el("dl");
      const vector = (kb.knowledgeBaseConfiguration || {}).vectorKnowledgeBaseConfiguration || {};
      for (const [term, value] of [["id", kb.knowledgeBaseId], ["status", kb.status],
        ["embedding model", modelOf(vector.embeddingModelArn)], ["description", kb.description]]) {
        if (value) { facts.appendChild(el("dt", term)); facts.appendChild(el("dd", value)); }
      }
      reasons(box, (kb.failureReasons || []).map((r) => "- " + r).join("\n"));
      box.appendChild(el("div", null, "detail")).appendChild(facts);
      const table = el("table");
      const head = el("tr");
      for (const name of KB_SOURCE_COLUMNS) { head.appendChild(el("th", name)).scope = "col"; }
      table.appendChild(el("thead")).appendChild(head);
      const body = table.appendChild(el("tbody"));
      body.dataset.columns = String(KB_SOURCE_COLUMNS.length);
      if (!Array.isArray(sources)) { refused(body, sources); }
      else if (!sources.length) {
        const tr = el("tr");
        cell(tr, "no data sources yet: outcrop kb add-source " + kb.name + " SOURCE --uri FOLDER", "empty").colSpan = KB_SOURCE_COLUMNS.length;
        body.appendChild(tr);
      } else {
        for (const item of sources) { const tr = el("tr"); renderSource(tr, kb, item); body.appendChild(tr); }
      }
      box.appendChild(table);
      $("kb-list").appendChild(box);
    }
  });
}
views.knowledge = {auto: true, every: 10000, load: () => [section("kb-list", loadKnowledge, renderKnowledge)]};

// ---- keys (admin) ----
views.keys = {auto: false, load: () => [section("keys", async () => {
  const keys = (await get(SOURCES.keys)).keys || [];
  await whoami();
  $("keys-create").hidden = may("outcrop:CreateKey", "*") === false;
  if (may("outcrop:CreateKey", "*") === false) {
    const err = new Error("managing keys needs an admin key"); err.status = 403; throw err;
  }
  const models = await get(SOURCES.models).catch(() => ({modelSummaries: []}));
  return [keys, models.modelSummaries || []];
}, ([keys, models]) => {
  $("keys-create").hidden = false;
  const select = $("new-key-model");
  const keep = select.value;
  select.replaceChildren(el("option", "every model"), ...models.map((m) => { const o = el("option", m.modelName); o.value = m.modelName; return o; }));
  select.firstChild.value = "";
  select.value = keep;
  fill("keys", keys, (tr, k) => {
    cell(tr, k.name); cell(tr, policyKind(k.policy)); cell(tr, k.apiKeyPrefix ? k.apiKeyPrefix + "…" : "-");
    cell(tr, k.accessKeyId); cell(tr, age(k.createdAt) ? age(k.createdAt) + " ago" : "");
    const td = cell(tr, "");
    const own = me && me.name === k.name;
    td.appendChild(button("Rotate " + k.name, async () => {
      if (!await confirmAction("Rotate the key " + k.name + "? Its current secrets stop working at once" + (own ? " (this is the key you are signed in with)." : "."), "Rotate")) { return; }
      try { showSecret(await send("POST", SOURCES.keys + "/" + enc(k.name) + "/rotate"), "Rotated " + k.name + "."); }
      catch (err) { say("keys-result", "Cannot rotate " + k.name + ": " + err.message, "error"); }
      refreshView();
    }));
    td.appendChild(document.createTextNode(" "));
    td.appendChild(button("Delete " + k.name, async () => {
      if (!await confirmAction("Delete the key " + k.name + "? Anything using it stops working" + (own ? "; this is the key you are signed in with." : "."), "Delete " + k.name)) { return; }
      try { await send("DELETE", SOURCES.keys + "/" + enc(k.name)); say("keys-result", "Deleted " + k.name + ".", "ok"); }
      catch (err) { say("keys-result", "Cannot delete " + k.name + ": " + err.message, "error"); }
      refreshView();
    }, "danger"));
  });
})]};
function showSecret(created, title) {
  const secret = $("new-secret");
  $("new-secret-title").textContent = title;
  $("new-api-key").textContent = created.apiKey || "";
  $("new-access-key").textContent = created.accessKeyId || "";
  $("new-secret-key").textContent = created.secretAccessKey || "";
  $("new-link").textContent = created.apiKey ? location.origin + location.pathname + "#key=" + created.apiKey : "";
  secret.hidden = false;
  say("keys-result", "");
  secret.focus();
}
$("new-secret-dismiss").addEventListener("click", () => {
  $("new-secret").hidden = true;
  for (const id of ["new-api-key", "new-access-key", "new-secret-key", "new-link"]) { $(id).textContent = ""; }
});
$("key-create-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const name = $("new-key-name").value.trim();
  const policy = $("new-key-policy").value;
  const body = {name, policy};
  if (policy === "invoke-only" && $("new-key-model").value) { body.models = [$("new-key-model").value]; }
  try {
    showSecret(await send("POST", SOURCES.keys, body), "Created " + name + " (" + policy + (body.models ? ", " + body.models[0] : "") + ").");
    $("new-key-name").value = "";
  } catch (err) { say("keys-result", "Cannot create the key: " + err.message, "error"); }
  refreshView();
});

// ---- audit ----
let auditToken = null;
views.audit = {auto: true, every: 5000, load: () => [section("audit", () => allowed("outcrop:ReadAudit", () => get(SOURCES.audit)), (page) => {
  fill("audit", page.events || [], renderAudit);
  auditToken = page.nextToken || null;
  $("audit-more").hidden = !auditToken;
})]};
function renderAudit(tr, e) {
  cell(tr, typeof e.time === "number" ? new Date(e.time * 1000).toISOString() : e.time);
  cell(tr, e.principal); cell(tr, e.action); cell(tr, e.resource, "path");
  const status = cell(tr, [e.status, e.httpStatus].filter((v) => v !== null && v !== undefined).join(" "),
    e.status === "allowed" || e.status === "ok" ? "ok" : e.status ? "Failed" : "");
  if (e.reason) { status.appendChild(el("div", e.reason, "reason")); }
  cell(tr, e.requestId, "path"); cell(tr, e.sourceIp);
}
$("audit-more").addEventListener("click", async () => {
  if (!auditToken) { return; }
  views.audit.paused = true;  // keep the older pages on screen
  try {
    const page = await get(SOURCES.audit + "&nextToken=" + enc(auditToken));
    for (const e of page.events || []) { const tr = el("tr"); renderAudit(tr, e); $("audit").appendChild(tr); }
    auditToken = page.nextToken || null;
    $("audit-more").hidden = !auditToken;
  } catch (err) { $("audit-more").hidden = true; }
});

// ---- router ----
let current = null;
let lastLoad = 0;
let loading = null;  // the refresh in flight: the timer never stacks a second one on it
function route() {
  const hash = decodeURIComponent(location.hash.replace(/^#/, ""));
  if (hash.startsWith("model/")) { return ["model", hash.slice(6)]; }
  return [views[hash] ? hash : "overview", ""];
}
function refreshView() {
  loading = (loading || Promise.resolve()).then(refreshOnce, refreshOnce);
  const mine = loading;
  mine.finally(() => { if (loading === mine) { loading = null; } });
  return mine;
}
async function refreshOnce() {
  failures = [];
  const view = current;
  await whoami();
  if (view !== current) { return; }
  await Promise.all(views[view].load());
  lastLoad = Date.now();
  let health = null;
  try { health = await get(SOURCES.health); } catch (err) { failures.push(err); }
  if (!apiKey()) {
    statusLine.textContent = "enter an API key to see this server (or open a /console#key=… link)";
  } else if (failures.some(badKey)) {
    statusLine.textContent = "cannot read: " + failures.find(badKey).message;
  } else {
    const refusedCount = failures.filter(denied).length;
    statusLine.textContent = (health ? "outcrop " + health.version + " · " + health.status + " · " : "") +
      (refusedCount ? refusedCount + " section(s) not allowed for this key · " : "") + "updated " + new Date().toLocaleTimeString();
  }
}
function show(focus) {
  const [view, arg] = route();
  const changed = view !== current || arg !== modelName;
  current = view;
  if (view === "model") {
    if (arg !== modelName) { modelShown = null; say("model-action-result", ""); }
    modelName = arg;
    $("model-title").textContent = "Model " + arg;
  }
  views.audit.paused = false;
  for (const name of Object.keys(views)) { $("view-" + name).hidden = name !== view; }
  for (const a of document.querySelectorAll("nav a")) {
    if (a.dataset.view === view) { a.setAttribute("aria-current", "page"); } else { a.removeAttribute("aria-current"); }
  }
  document.title = "Outcrop console · " + (view === "model" ? arg : document.querySelector('nav a[data-view="' + view + '"]').textContent);
  if (changed && focus) { $("main").focus({preventScroll: true}); }
  refreshView();
}
window.addEventListener("hashchange", () => {
  if (takeKeyFromLink()) { me = undefined; }
  show(true);
});
setInterval(() => {
  const view = views[current];
  if (!view || !view.auto || view.paused || document.hidden) { return; }
  if (loading || Date.now() - lastLoad < (view.every || REFRESH_MS) - 100) { return; }
  if ($("confirm").open) { return; }
  refreshView();
}, REFRESH_MS);
show(false);
