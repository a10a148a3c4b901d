"""``/console``: one read-only page that shows what the server is doing.

Models, their copies (state, load, age), import jobs with live progress, batch jobs with their
record counts, and the gateway's health, refreshed every two seconds. The page itself holds no
data and is served without credentials; everything it shows comes from the same APIs the CLI
uses, called from the browser with the API key the user types (kept in the tab's
``sessionStorage`` only), so the policies of that key decide what it sees. A link may carry the
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
}

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #1d2330; background: #f5f6f8; }
header { display: flex; gap: 1em; align-items: center; padding: .6em 1.2em; background: #1d2330; color: #fff; }
header h1 { font-size: 1.1em; margin: 0 1em 0 0; }
header input { width: 22em; }
#status { margin-left: auto; font-size: .9em; opacity: .85; }
main { padding: 0 1.2em 2em; }
section { background: #fff; border-radius: 6px; margin-top: 1em; padding: .4em 1em 1em; box-shadow: 0 1px 2px #0002; }
h2 { font-size: 1em; margin: .6em 0; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .25em .6em .25em 0; border-bottom: 1px solid #eee; white-space: nowrap; }
td:last-child { white-space: normal; overflow-wrap: anywhere; min-width: 12em; }
table { table-layout: auto; }
th { font-weight: 600; color: #555; }
.bar { display: inline-block; width: 9em; height: .7em; background: #e5e7eb; border-radius: 3px; vertical-align: middle; }
.bar > span { display: block; height: 100%; background: #2f7d4f; border-radius: 3px; }
.Ready, .Completed { color: #2f7d4f; } .Failed, .Stopped, .Expired { color: #b42318; }
.Starting, .InProgress, .Validating, .Scheduled, .Submitted, .Draining, .Stopping { color: #a15c07; }
.empty { color: #888; }
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

async function get(path) {
  const headers = keyInput.value ? {"Authorization": "Bearer " + keyInput.value.trim()} : {};
  const response = await fetch(path, {headers, cache: "no-store"});
  const body = await response.json().catch(() => ({}));
  if (!response.ok) { throw new Error((body.message || (body.error && body.error.message)) || response.statusText); }
  return body;
}

function cell(row, value, cls) {
  const td = document.createElement("td");
  td.textContent = value === undefined || value === null ? "" : String(value);
  if (cls) { td.className = cls; }
  row.appendChild(td);
  return td;
}

function bar(row, done, total) {
  const td = cell(row, "");
  if (!total) { return; }
  const outer = document.createElement("span"); outer.className = "bar";
  const inner = document.createElement("span");
  inner.style.width = Math.min(100, 100 * done / total).toFixed(1) + "%";
  outer.appendChild(inner); td.appendChild(outer);
  td.appendChild(document.createTextNode(" " + done + " / " + total));
}

function age(iso) {
  if (!iso) { return ""; }
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  return s < 90 ? s.toFixed(0) + " s" : s < 5400 ? (s / 60).toFixed(0) + " min" : (s / 3600).toFixed(1) + " h";
}

function fill(id, rows, render) {
  const body = document.getElementById(id);
  body.replaceChildren();
  if (!rows.length) {
    const tr = document.createElement("tr");
    cell(tr, "none", "empty").colSpan = 8;
    body.appendChild(tr);
  }
  for (const item of rows) { const tr = document.createElement("tr"); render(tr, item); body.appendChild(tr); }
}

async function refresh() {
  try {
    const [health, models, copies, imports, batches] = await Promise.all(
      ["health", "models", "copies", "imports", "batches"].map((k) => get(SOURCES[k])));
    const byModel = {};
    for (const c of copies.copies) { (byModel[c.modelName] = byModel[c.modelName] || []).push(c); }
    fill("models", models.modelSummaries || [], (tr, m) => {
      const mine = byModel[m.modelName] || [];
      cell(tr, m.modelName); cell(tr, m.modelArchitecture); cell(tr, m.instructSupported ? "yes" : "no");
      cell(tr, mine.filter((c) => c.state === "Ready").length + " ready / " + mine.length);
      cell(tr, mine.reduce((n, c) => n + c.inFlight, 0)); cell(tr, age(m.creationTime));
    });
    fill("copies", copies.copies, (tr, c) => {
      cell(tr, c.copyId); cell(tr, c.modelName); cell(tr, c.state, c.state); cell(tr, c.inFlight);
      cell(tr, age(c.startedAt)); cell(tr, c.lastUsedAt ? age(c.lastUsedAt) + " ago" : ""); cell(tr, c.url);
    });
    const details = await Promise.all((imports.modelImportJobSummaries || []).map((j) =>
      j.status !== "Completed" ? get("/outcrop/import-jobs/" + encodeURIComponent(j.jobName)).catch(() => j) : j));
    fill("imports", details, (tr, j) => {
      cell(tr, j.jobName); cell(tr, j.importedModelName); cell(tr, j.status, j.status);
      cell(tr, j.phase || ""); bar(tr, j.bytesDone || 0, j.bytesTotal || 0); cell(tr, age(j.creationTime));
      cell(tr, j.failureMessage || "");
    });
    fill("batches", batches.invocationJobSummaries || [], (tr, b) => {
      cell(tr, b.jobName); cell(tr, b.modelId); cell(tr, b.status, b.status);
      bar(tr, b.processedRecordCount || 0, b.totalRecordCount || 0);
      cell(tr, (b.successRecordCount || 0) + " ok / " + (b.errorRecordCount || 0) + " errors");
      cell(tr, age(b.submitTime)); cell(tr, b.message || "");
    });
    statusLine.textContent = "outcrop " + health.version + " · " + health.status + " · updated " +
      new Date().toLocaleTimeString();
  } catch (err) {
    statusLine.textContent = keyInput.value ? "cannot read: " + err.message : "enter an API key to see this server";
  }
}
refresh();
setInterval(refresh, 2000);
"""


def _table(title: str, body_id: str, columns: list[str]) -> str:
    head = "".join(f"<th>{c}</th>" for c in columns)
    return f'<section><h2>{title}</h2><table><thead><tr>{head}</tr></thead><tbody id="{body_id}"></tbody></table></section>'


def _page() -> tuple[str, str]:
    script = _SCRIPT.replace("__SOURCES__", json.dumps(SOURCES))
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
