"""The web console: an open page with no data, a strict CSP, and sources that answer with the key."""

from __future__ import annotations

import base64
import hashlib
import re

import httpx
import pytest

from outcrop.api.console import SAGEMAKER_LIST_ENDPOINTS, SOURCES
from tests.conftest import ServingServer, api

pytestmark = pytest.mark.e2e


def test_the_page_is_served_without_credentials_under_a_strict_policy(serving_server: ServingServer) -> None:
    response = httpx.get(f"{serving_server.url}/console")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy and "unsafe" not in policy
    (script,) = re.findall(r"<script>(.*?)</script>", response.text, flags=re.S)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in policy  # exactly this script may run
    # Server values are written as text, never parsed as HTML.
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script and "document.write" not in script


def test_every_source_the_page_reads_answers_with_a_key_and_refuses_without(
    serving_server: ServingServer,
) -> None:
    shapes = {
        "health": "version",
        "models": "modelSummaries",
        "copies": "copies",
        "imports": "modelImportJobSummaries",
        "batches": "invocationJobSummaries",
        "endpointMetrics": "endpoints",
    }
    assert set(SOURCES) == set(shapes)
    for name, path in SOURCES.items():
        response = api.get(f"{serving_server.url}{path}")
        assert response.status_code == 200, (name, response.text)
        assert shapes[name] in response.json(), name
        if name != "health":
            assert httpx.get(f"{serving_server.url}{path}").status_code in (401, 403), name
    # SageMaker's control plane (one POST route) answers the page's ListEndpoints the same way.
    target = {"X-Amz-Target": SAGEMAKER_LIST_ENDPOINTS, "Content-Type": "application/x-amz-json-1.1"}
    listed = api.post(f"{serving_server.url}/", content=b"{}", headers=target)
    assert listed.status_code == 200 and "Endpoints" in listed.json(), listed.text
    assert httpx.post(f"{serving_server.url}/", content=b"{}", headers=target).status_code in (401, 403)
    models = api.get(f"{serving_server.url}{SOURCES['models']}").json()["modelSummaries"]
    assert {serving_server.chat, serving_server.plain} <= {m["modelName"] for m in models}
    copies = api.get(f"{serving_server.url}{SOURCES['copies']}").json()["copies"]
    assert {"copyId", "modelName", "state", "inFlight", "startedAt", "lastUsedAt", "url"} <= set(copies[0])
    jobs = api.get(f"{serving_server.url}{SOURCES['imports']}").json()["modelImportJobSummaries"]
    detail = api.get(f"{serving_server.url}/outcrop/import-jobs/{jobs[0]['jobName']}").json()
    assert {"phase", "bytesDone", "bytesTotal"} <= set(detail)
