"""``/console``: one read-only page that shows what the server is doing.

Models, their copies (state, load, age), import jobs with live progress, batch jobs with their
record counts, and the gateway's health, refreshed every two seconds. The page itself holds no
data and is served without credentials; everything it shows comes from the same APIs the CLI
uses, called from the browser with the API key the user types (kept in the tab's
``sessionStorage`` only), so the policies of that key decide what it sees: each section loads
on its own, and one the key may not read says "not allowed for this key" in place while the
others still fill. Import failures keep their lines ("- reason" lines become bullets), and
below 900 px the tables wrap instead of overflowing. A link may carry the
key in its fragment (``/console#key=ocp-...``: browsers never send fragments to the server); the
page moves it into ``sessionStorage`` and drops it from the address bar.

It is one static HTML document with its script and style inline, allowed by their hashes in a
strict Content-Security-Policy; values from the server are written with ``textContent``, never
as HTML, so a model or job name cannot inject markup.
"""

from __future__ import annotations

import base64
import hashlib
import json

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(tags=["ops"])

# The APIs the page reads (a test checks each is a route that answers with the key).
SOURCES = {
    "health": "/health",
    "models": "/imported-models?maxResults=1000",
    "copies": "/outcrop/copies",
    "imports": "/model-import-jobs?maxResults=50&sortBy=CreationTime&sortOrder=Descending",
    "batches": "/model-invocation-jobs?maxResults=50&sortBy=CreationTime&sortOrder=Descending",
    "endpointMetrics": "/outcrop/endpoint-metrics",
}
# SageMaker's control plane is one POST route; the page asks it ListEndpoints (X-Amz-Target).
SAGEMAKER_LIST_ENDPOINTS = "SageMaker.ListEndpoints"

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #1d2330; background: #f5f6f8; }
header { display: flex; flex-wrap: wrap; gap: .4em 1em; align-items: center; padding: .6em 1.2em; background: #1d2330; color: #fff; }
header h1 { font-size: 1.1em; margin: 0 1em 0 0; }
header input { width: 22em; max-width: 60vw; }
#status { margin-left: auto; font-size: .9em; opacity: .85; }
main { padding: 0 1.2em 2em; }
section { background: #fff; border-radius: 6px; margin-top: 1em; padding: .4em 1em 1em; box-shadow: 0 1px 2px #0002; overflow-x: auto; }
h2 { font-size: 1em; margin: .6em 0; }
table { border-collapse: collapse; width: 100%; table-layout: auto; }
th, td { text-align: left; vertical-align: top; padding: .25em .6em .25em 0; border-bottom: 1px solid #eee; white-space: nowrap; }
td.wrap, td:last-child { white-space: normal; overflow-wrap: anywhere; min-width: 12em; }
td ul { margin: .2em 0 0; padding-left: 1.2em; }
th { font-weight: 600; color: #555; }
.bar { display: inline-block; width: 9em; height: .7em; background: #e5e7eb; border-radius: 3px; vertical-align: middle; }
.bar > span { display: block; height: 100%; background: #2f7d4f; border-radius: 3px; }
.Ready, .Completed { color: #2f7d4f; } .Failed, .Stopped, .Expired { color: #b42318; }
.Starting, .InProgress, .Validating, .Scheduled, .Submitted, .Draining, .Stopping { color: #a15c07; }
.empty { color: #888; }
.denied { color: #a15c07; font-style: italic; }
@media (max-width: 900px) {
  th, td { white-space: normal; overflow-wrap: anywhere; }
  td:last-child, td.wrap { min-width: 8em; }
  .bar { width: 5em; }
}
"""

_SCRIPT = """
"use strict";
const SOURCES = __SOURCES__;
const keyInput = document.getElementById("key");
const statusLine = document.getElementById("status");
if (location.hash.startsWith("#key=")) {  // a link with the key (never sent to the server): keep it in this tab
  sessionStorage.setItem("outcrop-key", decodeURIComponent(location.hash.slice(5)));
  history.replaceState(null, "", location.pathname);
}
keyInput.value = sessionStorage.getItem("outcrop-key") || "";
keyInput.addEventListener("change", () => { sessionStorage.setItem("outcrop-key", keyInput.value.trim()); refresh(); });

async function get(path, init) {
  const headers = keyInput.value ? {"Authorization": "Bearer " + keyInput.value.trim()} : {};
  const response = await fetch(path, {cache: "no-store", ...(init || {}), headers: {...headers, ...((init && init.headers) || {})}});
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error((body.message || (body.error && body.error.message)) || response.statusText);
    error.status = response.status;
    throw error;
  }
  return body;
}

function sagemaker(target) {
  return get("/", {method: "POST", body: "{}",
    headers: {"X-Amz-Target": target, "Content-Type": "application/x-amz-json-1.1"}});
}

function ms(value) { return value === null || value === undefined ? "-" : value.toFixed(1) + " ms"; }

function cell(row, value, cls) {
  const td = document.createElement("td");
  td.textContent = value === undefined || value === null ? "" : String(value);
  if (cls) { td.className = cls; }
  row.appendChild(td);
  return td;
}

function bytes(n) {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i += 1; }
  return (i ? n.toFixed(1) : n.toFixed(0)) + " " + units[i];
}

function bar(row, done, total, label) {
  const td = cell(row, "");
  if (!total) { td.textContent = label || ""; return; }
  const outer = document.createElement("span"); outer.className = "bar";
  const inner = document.createElement("span");
  inner.style.width = Math.min(100, 100 * done / total).toFixed(1) + "%";
  outer.appendChild(inner); td.appendChild(outer);
  td.appendChild(document.createTextNode(" " + (label || (done + " / " + total))));
}

// A failure message keeps its lines: "- reason" lines become bullets under the first line.
function reasons(row, text) {
  const td = cell(row, "", "wrap");
  if (!text) { return; }
  let list = null;
  for (const line of String(text).split("\\n")) {
    if (!line.trim()) { continue; }
    if (line.startsWith("- ")) {
      if (!list) { list = document.createElement("ul"); td.appendChild(list); }
      const li = document.createElement("li"); li.textContent = line.slice(2); list.appendChild(li);
    } else {
      const div = document.createElement("div"); div.textContent = line; td.appendChild(div); list = null;
    }
  }
}

function age(iso) {
  if (!iso) { return ""; }
  const then = typeof iso === "number" ? iso * 1000 : Date.parse(iso);  // SageMaker sends epoch seconds
  const s = Math.max(0, (Date.now() - then) / 1000);
  return s < 90 ? s.toFixed(0) + " s" : s < 5400 ? (s / 60).toFixed(0) + " min" : (s / 3600).toFixed(1) + " h";
}

function columns(id) { return document.getElementById(id).dataset.columns || 8; }

function fill(id, rows, render) {
  const body = document.getElementById(id);
  body.replaceChildren();
  if (!rows.length) {
    const tr = document.createElement("tr");
    cell(tr, "none", "empty").colSpan = columns(id);
    body.appendChild(tr);
  }
  for (const item of rows) { const tr = document.createElement("tr"); render(tr, item); body.appendChild(tr); }
}

// The server refused the key itself (unknown, or none typed), not one action of its policy.
function badKey(err) { return /API key is not valid|Missing credentials/.test(err.message || ""); }

// A section this key may not read says so in place; the others still show what the key may see.
function refused(id, err) {
  const body = document.getElementById(id);
  body.replaceChildren();
  const tr = document.createElement("tr");
  const text = !keyInput.value ? "enter an API key above" : badKey(err) ? "the key is not valid" :
    err.status === 403 ? "not allowed for this key" : "cannot read: " + err.message;
  const td = cell(tr, text, "denied");
  td.colSpan = columns(id);
  td.title = err.message;
  body.appendChild(tr);
}

async function section(id, load, render) {
  try { render(await load()); } catch (err) { refused(id, err); throw err; }
}

// The listing holds neither progress nor failure reasons: a job not Completed is asked for its detail.
function importDetail(j) {
  return j.status === "Completed" ? j : get("/outcrop/import-jobs/" + encodeURIComponent(j.jobName)).catch(() => j);
}

function renderImport(tr, j) {
  cell(tr, j.jobName); cell(tr, j.importedModelName); cell(tr, j.status, j.status);
  if (j.status === "Completed") {
    cell(tr, "done"); bar(tr, 1, 1, "done");
  } else if (j.status === "Failed") {
    cell(tr, "failed", "Failed"); cell(tr, "");
  } else {
    cell(tr, j.phase || "queued");
    bar(tr, j.bytesDone || 0, j.bytesTotal || 0,
      j.bytesTotal ? bytes(j.bytesDone || 0) + " / " + bytes(j.bytesTotal) : "");
  }
  cell(tr, age(j.creationTime));
  reasons(tr, j.failureMessage || "");
}

async function refresh() {
  const copiesLoad = get(SOURCES.copies);
  copiesLoad.catch(() => null);
  const results = await Promise.allSettled([
    section("models", async () => {
      const models = await get(SOURCES.models);
      const copies = await copiesLoad.catch(() => null);  // copy counts only where the key may list copies
      return [models, copies];
    }, ([models, copies]) => {
      const byModel = {};
      for (const c of (copies && copies.copies) || []) { (byModel[c.modelName] = byModel[c.modelName] || []).push(c); }
      fill("models", models.modelSummaries || [], (tr, m) => {
        const mine = byModel[m.modelName] || [];
        cell(tr, m.modelName); cell(tr, m.modelArchitecture); cell(tr, m.instructSupported ? "yes" : "no");
        cell(tr, copies ? mine.filter((c) => c.state === "Ready").length + " ready / " + mine.length : "-");
        cell(tr, copies ? mine.reduce((n, c) => n + c.inFlight, 0) : "-"); cell(tr, age(m.creationTime));
      });
    }),
    section("copies", () => copiesLoad, (copies) => {
      fill("copies", copies.copies || [], (tr, c) => {
        cell(tr, c.copyId); cell(tr, c.modelName); cell(tr, c.state, c.state); cell(tr, c.inFlight);
        cell(tr, age(c.startedAt)); cell(tr, c.lastUsedAt ? age(c.lastUsedAt) + " ago" : ""); cell(tr, c.url);
      });
    }),
    section("imports", async () => {
      const imports = await get(SOURCES.imports);
      return Promise.all((imports.modelImportJobSummaries || []).map(importDetail));
    }, (details) => fill("imports", details, renderImport)),
    section("batches", () => get(SOURCES.batches), (batches) => {
      fill("batches", batches.invocationJobSummaries || [], (tr, b) => {
        cell(tr, b.jobName); cell(tr, b.modelId); cell(tr, b.status, b.status);
        bar(tr, b.processedRecordCount || 0, b.totalRecordCount || 0);
        cell(tr, (b.successRecordCount || 0) + " ok / " + (b.errorRecordCount || 0) + " errors");
        cell(tr, age(b.submitTime)); cell(tr, b.message || "");
      });
    }),
    section("endpoints", async () => {
      const endpoints = await sagemaker(__LIST_ENDPOINTS__);
      const metrics = await get(SOURCES.endpointMetrics).catch(() => null);  // figures where the key may read them
      return [endpoints, metrics];
    }, ([endpoints, metrics]) => {
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
  ]);
  const failures = results.filter((r) => r.status === "rejected").map((r) => r.reason);
  let health = null;
  try { health = await get(SOURCES.health); } catch (err) { failures.push(err); }
  if (!keyInput.value) {
    statusLine.textContent = "enter an API key to see this server";
  } else if (failures.some(badKey)) {
    statusLine.textContent = "cannot read: " + failures.find(badKey).message;
  } else {
    statusLine.textContent = (health ? "outcrop " + health.version + " · " + health.status + " · " : "") +
      (failures.length ? failures.length + " section(s) not allowed for this key · " : "") +
      "updated " + new Date().toLocaleTimeString();
  }
}
refresh();
setInterval(refresh, 2000);
"""


def _table(title: str, body_id: str, columns: list[str]) -> str:
    head = "".join(f"<th>{c}</th>" for c in columns)
    return (
        f'<section aria-labelledby="{body_id}-title"><h2 id="{body_id}-title">{title}</h2><table>'
        f'<thead><tr>{head}</tr></thead><tbody id="{body_id}" data-columns="{len(columns)}"></tbody></table></section>'
    )


def _page() -> tuple[str, str]:
    script = _SCRIPT.replace("__SOURCES__", json.dumps(SOURCES)).replace(
        "__LIST_ENDPOINTS__", json.dumps(SAGEMAKER_LIST_ENDPOINTS)
    )
    html = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Outcrop console</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{_STYLE}</style></head>
<body><header><h1>Outcrop</h1>
<label>API key <input id="key" type="password" autocomplete="off" placeholder="ocp-… (outcrop keys create)"></label>
<span id="status"></span></header>
<main>
{_table("Models", "models", ["name", "architecture", "chat", "copies", "in flight", "imported"])}
{_table("Copies", "copies", ["copy", "model", "state", "in flight", "age", "last used", "address"])}
{_table("Import jobs", "imports", ["job", "model", "status", "phase", "progress", "age", "failure"])}
{_table("Batch jobs", "batches", ["job", "model", "status", "records", "results", "age", "message"])}
{_table("SageMaker endpoints", "endpoints", ["endpoint", "status", "invocations", "4xx / 5xx", "model latency", "overhead", "age"])}
</main>
<script>{script}</script></body></html>
"""

    def digest(text: str) -> str:
        return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"

    policy = (
        f"default-src 'none'; connect-src 'self'; script-src {digest(script)}; style-src {digest(_STYLE)}; "
        "img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return html, policy


PAGE, CONTENT_SECURITY_POLICY = _page()


@router.get("/console", summary="A read-only web console (models, copies, import and batch jobs)")
def console() -> HTMLResponse:
    return HTMLResponse(
        PAGE,
        headers={
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store",
        },
    )
