"""The console's script, run by Node.js against a stand-in DOM and canned API answers.

No browser is needed: the page's own script runs unchanged, with ``document``, ``fetch`` and
``sessionStorage`` replaced by the few stand-ins it uses, and the tables it fills are read back
as text. (Skipped where ``node`` is not installed.)
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from outcrop.api.console import PAGE, SOURCES

NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed")

HARNESS = r"""
"use strict";
const routes = __ROUTES__;
const requests = [];
class Node_ {
  constructor(tag, text) { this.tag = tag; this.children = []; this.own = text || ""; this.dataset = {}; this.style = {};
    this.className = ""; this.value = ""; this.listeners = {}; }
  get textContent() { return this.own + this.children.map((c) => c.textContent).join(""); }
  set textContent(v) { this.own = v; this.children = []; }
  appendChild(c) { this.children.push(c); return c; }
  replaceChildren() { this.children = []; }
  addEventListener(kind, fn) { this.listeners[kind] = fn; }
}
const elements = {key: new Node_("input"), status: new Node_("span")};
for (const [id, n] of Object.entries(__COLUMNS__)) { elements[id] = new Node_("tbody"); elements[id].dataset.columns = n; }
global.document = {
  getElementById: (id) => elements[id],
  createElement: (tag) => new Node_(tag),
  createTextNode: (text) => new Node_("#text", text),
};
const store = {};
global.sessionStorage = {getItem: (k) => (k in store ? store[k] : null), setItem: (k, v) => { store[k] = v; }};
global.location = {hash: __HASH__, pathname: "/console"};
global.history = {replaceState: () => { global.location.hash = ""; }};
global.setInterval = () => 0;
global.fetch = async (path, init) => {
  requests.push({path, authorization: (init.headers || {}).Authorization || null});
  const [status, body] = routes[path] || [404, {message: "no such route: " + path}];
  return {ok: status < 300, status, statusText: String(status), json: async () => body};
};
__SCRIPT__
function rows(id) {
  return elements[id].children.map((tr) => tr.children.map((td) => ({
    text: td.textContent, cls: td.className, items: td.children.filter((c) => c.tag === "ul")
      .flatMap((ul) => ul.children.map((li) => li.textContent)),
  })));
}
setTimeout(() => {
  const out = {status: elements.status.textContent, stored: store["outcrop-key"] || null, requests};
  for (const id of Object.keys(__COLUMNS__)) { out[id] = rows(id); }
  process.stdout.write(JSON.stringify(out));
}, 100);
"""

SAGEMAKER = "/"
MODEL = {
    "modelName": "my-llama",
    "modelArchitecture": "llama",
    "instructSupported": True,
    "creationTime": None,
}
DENIED = (403, {"message": "User: arn:... is not authorized to perform: outcrop:ListCopies on resource: *"})
FAILURE = "The model folder failed 2 check(s):\n- config.json: auto_map is set\n- model.bin: pickle weights"


def _columns() -> dict[str, int]:
    return {m[0]: int(m[1]) for m in re.findall(r'<tbody id="(\w+)" data-columns="(\d+)">', PAGE)}


def run_console(
    tmp_path: Path, routes: dict[str, Any], *, key_hash: str = "#key=ocp-secret"
) -> dict[str, Any]:
    """Runs the page's script once; returns each table's rows (cells as text), the status line and the requests."""
    (script,) = re.findall(r"<script>(.*?)</script>", PAGE, flags=re.S)
    harness = (
        HARNESS.replace("__ROUTES__", json.dumps(routes))
        .replace("__COLUMNS__", json.dumps(_columns()))
        .replace("__HASH__", json.dumps(key_hash))
        .replace("__SCRIPT__", script)
    )
    path = tmp_path / "console.js"
    path.write_text(harness)
    assert NODE is not None
    done = subprocess.run([NODE, str(path)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _routes(**overrides: Any) -> dict[str, Any]:
    routes: dict[str, Any] = {
        SOURCES["health"]: (200, {"status": "ok", "version": "1.0"}),
        SOURCES["models"]: (200, {"modelSummaries": [MODEL]}),
        SOURCES["copies"]: (200, {"copies": []}),
        SOURCES["imports"]: (200, {"modelImportJobSummaries": []}),
        SOURCES["batches"]: (200, {"invocationJobSummaries": []}),
        SOURCES["endpointMetrics"]: (200, {"endpoints": []}),
        SAGEMAKER: (200, {"Endpoints": []}),  # ListEndpoints (X-Amz-Target), SageMaker's one POST route
    }
    routes.update({(SAGEMAKER if k == "sagemaker" else SOURCES[k]): v for k, v in overrides.items()})
    return routes


def test_an_invoke_only_key_sees_its_models_and_each_denied_section_says_so_in_place(tmp_path: Path) -> None:
    page = run_console(
        tmp_path,
        _routes(copies=DENIED, imports=DENIED, batches=DENIED, sagemaker=DENIED, endpointMetrics=DENIED),
    )

    assert [c["text"] for c in page["models"][0]][:3] == ["my-llama", "llama", "yes"]
    for section in ("copies", "imports", "batches", "endpoints"):
        (only,) = page[section]
        assert [c["text"] for c in only] == ["not allowed for this key"], section
    assert "4 section(s) not allowed for this key" in page["status"]


def test_endpoints_show_their_status_and_this_gateways_invocation_figures(tmp_path: Path) -> None:
    endpoints = {"Endpoints": [{"EndpointName": "my-ep", "EndpointStatus": "InService", "CreationTime": 1.0}]}
    row = {"EndpointName": "my-ep", "InferenceComponentName": None, "Invocation5XXErrors": 0}
    metrics = {
        "endpoints": [
            {
                **row,
                "VariantName": "A",
                "Invocations": 3,
                "Invocation4XXErrors": 1,
                "ModelLatencyMs": 10.0,
                "OverheadLatencyMs": 0.5,
            },
            {
                **row,
                "VariantName": "B",
                "Invocations": 1,
                "Invocation4XXErrors": 0,
                "ModelLatencyMs": 30.0,
                "OverheadLatencyMs": None,
            },
        ]
    }
    page = run_console(tmp_path, _routes(sagemaker=(200, endpoints), endpointMetrics=(200, metrics)))

    (cells,) = ([c["text"] for c in r] for r in page["endpoints"])
    assert cells[:6] == ["my-ep", "InService", "4", "1 / 0", "15.0 ms", "0.5 ms"]  # means weighted by calls
    assert cells[6].endswith(" h")  # epoch seconds, as SageMaker sends them


def test_the_key_comes_from_the_fragment_is_kept_in_the_session_and_sent_as_a_bearer(tmp_path: Path) -> None:
    page = run_console(tmp_path, _routes())

    assert page["stored"] == "ocp-secret"
    assert all(r["authorization"] == "Bearer ocp-secret" for r in page["requests"])
    assert all("ocp-secret" not in r["path"] for r in page["requests"])  # never in a URL


def test_completed_imports_show_done_and_failed_ones_their_reasons_as_bullets(tmp_path: Path) -> None:
    jobs = [
        {"jobName": "ok-1", "importedModelName": "a", "status": "Completed", "creationTime": None},
        {"jobName": "bad-1", "importedModelName": "b", "status": "Failed", "creationTime": None},
        {"jobName": "run-1", "importedModelName": "c", "status": "InProgress", "creationTime": None},
    ]
    details = {
        "/outcrop/import-jobs/bad-1": (
            200,
            {
                **jobs[1],
                "phase": "done",
                "bytesDone": 5_000_000,
                "bytesTotal": 5_000_000,
                "failureMessage": FAILURE,
            },
        ),
        "/outcrop/import-jobs/run-1": (
            200,
            {
                **jobs[2],
                "phase": "fetching",
                "bytesDone": 1_500_000,
                "bytesTotal": 6_000_000,
                "failureMessage": None,
            },
        ),
    }
    page = run_console(tmp_path, {**_routes(imports=(200, {"modelImportJobSummaries": jobs})), **details})

    completed, failed, running = ([c["text"] for c in row] for row in page["imports"])
    assert completed[3:5] == ["done", " done"]
    assert failed[3:5] == ["failed", ""]  # no full green bar, no raw byte counts
    assert "5000000" not in "".join(failed)
    assert page["imports"][1][6]["items"] == ["config.json: auto_map is set", "model.bin: pickle weights"]
    assert failed[6].startswith("The model folder failed 2 check(s):")
    assert running[3:5] == ["fetching", " 1.5 MB / 6.0 MB"]


def test_a_narrow_window_wraps_the_tables_instead_of_overflowing() -> None:
    style = re.search(r"<style>(.*?)</style>", PAGE, flags=re.S)
    assert style is not None
    narrow = re.search(r"@media \(max-width: (\d+)px\) \{(.*?)\n\}", style.group(1), flags=re.S)
    assert narrow is not None and int(narrow.group(1)) >= 760
    assert "white-space: normal" in narrow.group(2)
    assert "overflow-x: auto" in style.group(1)  # a table that still cannot fit scrolls inside its section


def test_a_key_the_server_does_not_know_is_named_as_such_not_as_a_policy_denial(tmp_path: Path) -> None:
    invalid = (403, {"message": "The API key is not valid. Create one with `outcrop keys create`."})
    routes = _routes(models=invalid, copies=invalid, imports=invalid, batches=invalid)

    page = run_console(tmp_path, routes)

    assert [c["text"] for c in page["models"][0]] == ["the key is not valid"]
    assert page["status"].startswith("cannot read: The API key is not valid")


def test_without_a_key_the_page_asks_for_one(tmp_path: Path) -> None:
    missing = (403, {"message": "Missing credentials: sign the request with AWS SigV4 ..."})
    routes = _routes(models=missing, copies=missing, imports=missing, batches=missing)

    page = run_console(tmp_path, routes, key_hash="")

    assert [c["text"] for c in page["copies"][0]] == ["enter an API key above"]
    assert page["status"] == "enter an API key to see this server"
    assert all(r["authorization"] is None for r in page["requests"])
