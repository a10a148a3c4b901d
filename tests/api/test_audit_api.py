"""GET /outcrop/audit through a real server: admin only, newest first, paginated."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tests.conftest import ServerProcess, api

pytestmark = pytest.mark.e2e


def test_the_audit_log_reads_newest_first_in_pages_for_admins_only(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server()
    keys = {}
    for name in ("audit-a", "audit-b", "audit-c"):
        created = api.post(f"{server.url}/outcrop/keys", json={"name": name, "policy": "read-only"})
        assert created.status_code == 200, created.text
        keys[name] = created.json()["apiKey"]
    read_only = {"Authorization": f"Bearer {keys['audit-a']}"}
    refused = httpx.get(f"{server.url}/outcrop/audit", headers=read_only)
    assert refused.status_code == 403 and "outcrop:ReadAudit" in refused.json()["message"]
    assert httpx.get(f"{server.url}/outcrop/audit").status_code in (401, 403)  # no credentials

    first = api.get(f"{server.url}/outcrop/audit", params={"maxResults": 2})
    assert first.status_code == 200, first.text
    events = first.json()["events"]
    assert [e["status"] for e in events] == ["unauthenticated", "denied"]  # the newest first
    assert events[0]["httpStatus"] == 403 and events[0]["resource"] == "/outcrop/audit"
    assert events[1]["action"] == "outcrop:ReadAudit" and events[1]["principal"] == "audit-a"
    assert events[1]["httpStatus"] == 403 and events[1]["sourceIp"] == "127.0.0.1"
    assert events[1]["requestId"] and events[1]["time"].endswith("Z")
    assert first.json()["nextToken"]

    rest = api.get(
        f"{server.url}/outcrop/audit", params={"maxResults": 100, "nextToken": first.json()["nextToken"]}
    )
    created = [e for e in rest.json()["events"] if e["action"] == "outcrop:CreateKey"]
    assert len(created) == 3 and all(e["status"] == "allowed" and e["httpStatus"] == 200 for e in created)
    assert created[0]["principal"] == "admin" and created[0]["sourceIp"] == "127.0.0.1"
    assert rest.json()["nextToken"] is None
    # Never a secret in the log.
    assert not any(key in rest.text or key in first.text for key in keys.values())

    bad = api.get(f"{server.url}/outcrop/audit", params={"maxResults": 0})
    assert bad.status_code == 400 and "'maxResults' is '0'" in bad.json()["message"]
    bad = api.get(f"{server.url}/outcrop/audit", params={"nextToken": "abc"})
    assert bad.status_code == 400 and "nextToken" in bad.json()["message"]
