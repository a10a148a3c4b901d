"""``/console``: a small web console over the same APIs the CLI and SDKs use.

A hash router over views (``#overview``, ``#model/<name>``, ``#playground``, ``#charts``,
``#import``, ``#batches``, ``#knowledge``, ``#keys``, ``#audit``; docs/console.md is the tour). The page holds
no data and is served without credentials; everything it shows it fetches from the browser with
the API key the user types (kept in the tab's ``sessionStorage`` only), so the key's policy
decides what it sees: each section loads on its own, and one the key may not read says "not
allowed for this key" in place while the others still fill; an endpoint this server lacks says
"not available on this server". Actions (warm, min/max copies, delete, stop a batch job, create,
rotate and delete keys) are offered where the key's own policy allows them; the server decides.
A link may carry the key in its fragment (``/console#key=ocp-...``: browsers never send fragments
to the server); the page moves it into ``sessionStorage`` and drops it from the address bar.

The page is three editable files in ``console_assets/`` (HTML, CSS, JS; no build step, no
library: the charts are inline SVG drawn by the script), put together once at import into one
document whose script and style are inline and allowed by their hashes in a strict
Content-Security-Policy. Values from the server are written with ``textContent``, never as HTML,
so a model or job name cannot inject markup.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(tags=["ops"])

# The APIs the overview's tables read (a test checks each is a route that answers with the key).
SOURCES = {
    "health": "/health",
    "models": "/imported-models?maxResults=1000",
    "copies": "/outcrop/copies",
    "imports": "/model-import-jobs?maxResults=50&sortBy=CreationTime&sortOrder=Descending",
    "batches": "/model-invocation-jobs?maxResults=50&sortBy=CreationTime&sortOrder=Descending",
    "endpointMetrics": "/outcrop/endpoint-metrics",
}
# What the other views read (prefixes end in '/': the page appends a name).
VIEW_SOURCES = {
    "importDetail": "/outcrop/import-jobs/",
    "modelDetail": "/outcrop/models/",
    "keys": "/outcrop/keys",
    "stats": "/outcrop/stats?minutes=60",
    "audit": "/outcrop/audit?maxResults=100",
}
# SageMaker's control plane is one POST route; the page asks it ListEndpoints (X-Amz-Target).
SAGEMAKER_LIST_ENDPOINTS = "SageMaker.ListEndpoints"

_ASSETS = resources.files("outcrop.api") / "console_assets"
_TABLE = re.compile(r"__TABLE ([\w-]+)\|([^|]+)\|([^_]+)__")


def _table(match: re.Match[str]) -> str:
    body_id, title, names = match.group(1), match.group(2), match.group(3).split(",")
    head = "".join(f'<th scope="col">{html.escape(c)}</th>' for c in names)
    return (
        f'<section aria-labelledby="{body_id}-title"><h2 id="{body_id}-title">{html.escape(title)}</h2><table>'
        f'<thead><tr>{head}</tr></thead><tbody id="{body_id}" data-columns="{len(names)}"></tbody></table></section>'
    )


def _digest(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def _page() -> tuple[str, str]:
    style = (_ASSETS / "console.css").read_text(encoding="utf-8")
    script = (
        (_ASSETS / "console.js")
        .read_text(encoding="utf-8")
        .replace("__SOURCES__", json.dumps({**SOURCES, **VIEW_SOURCES}))
        .replace("__LIST_ENDPOINTS__", json.dumps(SAGEMAKER_LIST_ENDPOINTS))
    )
    page = _TABLE.sub(_table, (_ASSETS / "console.html").read_text(encoding="utf-8"))
    page = page.replace("__STYLE__", style).replace("__SCRIPT__", script)
    policy = (
        f"default-src 'none'; connect-src 'self'; script-src {_digest(script)}; style-src {_digest(style)}; "
        "img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return page, policy


PAGE, CONTENT_SECURITY_POLICY = _page()


@router.get("/console", summary="A web console: models, playground, charts, imports, batch jobs, keys, audit")
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
