"""PUT /outcrop/models/{id}/scaling through a real server: validated, used by the controller, kept across restarts."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ServerProcess, api, boto3_client, import_and_wait

pytestmark = pytest.mark.e2e


def detail(server: ServerProcess, name: str) -> dict[str, Any]:
    response = api.get(f"{server.url}/outcrop/models/{name}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def put(server: ServerProcess, name: str, body: Any, **headers: str) -> httpx.Response:
    return api.put(f"{server.url}/outcrop/models/{name}/scaling", json=body, headers=headers)


def live_copies(server: ServerProcess, name: str, state: str = "Ready") -> int:
    copies = api.get(f"{server.url}/outcrop/copies").json()["copies"]
    return sum(1 for c in copies if c["modelName"] == name and c["state"] == state)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def server_with_model(
    start_server: Callable[..., ServerProcess], tiny_model: Callable[..., Path]
) -> tuple[ServerProcess, str]:
    server = start_server(OUTCROP_SERVING__SCALING_MAX_COPIES="4", OUTCROP_SERVING__WORKER_THREADS="1")
    import_and_wait(boto3_client("bedrock", server.url), tiny_model(), "scaled")
    return server, "scaled"


BAD_BODIES = [
    ({"minCopies": 3, "maxCopies": 2}, "minCopies", "raise maxCopies to at least 3"),
    ({"minCopies": -1, "maxCopies": 2}, "minCopies", "0 or more"),
    ({"minCopies": 0, "maxCopies": 0}, "maxCopies", "at least 1"),
    ({"minCopies": 0, "maxCopies": 5}, "maxCopies", "OUTCROP_SERVING__SCALING_MAX_COPIES"),
    ({"minCopies": "1", "maxCopies": 2}, "minCopies", "whole number"),
    ({"maxCopies": 2}, "minCopies", "'minCopies' is missing"),
    ({"minCopies": 0, "maxCopies": 1, "idleSeconds": 5}, "idleSeconds", "Unknown field"),
]


def test_bad_scaling_is_refused_naming_the_fix_and_the_configured_scaling_stays(
    server_with_model: tuple[ServerProcess, str],
) -> None:
    server, name = server_with_model
    for body, param, words in BAD_BODIES:
        response = put(server, name, body)
        assert response.status_code == 400, (body, response.text)
        assert response.headers["x-amzn-ErrorType"].startswith("ValidationException")
        message = response.json()["message"]
        assert words in message and param in message, (body, message)
    assert detail(server, name)["scaling"] == {
        "minCopies": 0,
        "maxCopies": 1,
        "source": "config",
        "maxCopiesCap": 4,
        "liveCopies": 0,
        "scaleToZeroSeconds": 300.0,
        "idleSeconds": None,
        "scaleToZeroInSeconds": None,
    }


def test_only_admins_may_scale_and_unknown_models_are_named(
    server_with_model: tuple[ServerProcess, str],
) -> None:
    server, name = server_with_model
    created = api.post(
        f"{server.url}/outcrop/keys", json={"name": f"ro-{uuid.uuid4().hex[:6]}", "policy": "read-only"}
    )
    read_only = {"Authorization": f"Bearer {created.json()['apiKey']}"}
    refused = httpx.put(
        f"{server.url}/outcrop/models/{name}/scaling",
        json={"minCopies": 1, "maxCopies": 1},
        headers=read_only,
    )
    assert refused.status_code == 403 and "outcrop:UpdateModelScaling" in refused.json()["message"]
    assert httpx.get(f"{server.url}/outcrop/models/{name}", headers=read_only).status_code == 200
    missing = put(server, "no-such-model", {"minCopies": 0, "maxCopies": 1})
    assert missing.status_code == 404 and "no-such-model" in missing.json()["message"]


def test_min_copies_start_copies_and_survive_a_restart(
    server_with_model: tuple[ServerProcess, str], start_server: Callable[..., ServerProcess]
) -> None:
    server, name = server_with_model
    response = put(server, name, {"minCopies": 1, "maxCopies": 2})
    assert response.status_code == 200, response.text
    scaling = response.json()["scaling"]
    assert (scaling["minCopies"], scaling["maxCopies"], scaling["source"]) == (1, 2, "api")
    assert scaling["scaleToZeroSeconds"] is None and scaling["scaleToZeroInSeconds"] is None  # kept warm
    wait_for(lambda: live_copies(server, name) == 1, "the controller to start the min copy")

    server.stop()
    again = start_server(data_dir=server.data_dir, OUTCROP_SERVING__WORKER_THREADS="1")
    scaling = detail(again, name)["scaling"]
    assert (scaling["minCopies"], scaling["maxCopies"], scaling["source"]) == (1, 2, "api")
    wait_for(lambda: live_copies(again, name) == 1, "the restarted server to keep the model warm")

    # Back to scale-to-zero: the copy stays for the idle window, and the detail counts it down.
    response = put(again, name, {"minCopies": 0, "maxCopies": 1})
    assert response.status_code == 200, response.text
    scaling = detail(again, name)["scaling"]
    assert scaling["scaleToZeroSeconds"] == 300.0 and scaling["liveCopies"] == 1
    assert scaling["idleSeconds"] is not None
    assert 0 <= scaling["scaleToZeroInSeconds"] <= 300.0
    assert scaling["idleSeconds"] + scaling["scaleToZeroInSeconds"] == pytest.approx(300.0, abs=0.01)
