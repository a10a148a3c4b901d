"""The gateway's own /metrics as Prometheus scrapes them after real invocations, and admin limits."""

from __future__ import annotations

import json
import secrets

import httpx
import pytest

from tests.conftest import ServingServer, api, boto3_client

pytestmark = pytest.mark.e2e


def test_invocations_are_counted_per_model_and_invented_names_share_one_label(
    serving_server: ServingServer,
) -> None:
    runtime = boto3_client("bedrock-runtime", serving_server.url)
    body = json.dumps({"prompt": "count me", "max_gen_len": 2})
    runtime.invoke_model(modelId=serving_server.chat, body=body)
    runtime.invoke_model(modelId=serving_server.chat_arn, body=body)  # the same model by ARN
    invented = [f"no-such-model-{secrets.token_hex(4)}" for _ in range(3)]
    for name in invented:
        with pytest.raises(runtime.exceptions.ResourceNotFoundException):
            runtime.invoke_model(modelId=name, body=body)
    text = httpx.get(f"{serving_server.url}/metrics").text  # open, as Prometheus scrapes it
    counted = [
        line
        for line in text.splitlines()
        if line.startswith("outcrop_invocations_total{") and f'model="{serving_server.chat}"' in line
    ]
    assert counted and float(counted[0].rsplit(" ", 1)[1]) >= 2
    assert 'outcrop_output_tokens_total{model="' + serving_server.chat + '"}' in text
    assert not any(name in text for name in invented)
    assert 'outcrop_invocation_errors_total{kind="client",model="<unknown>"}' in text


def test_warming_more_copies_than_the_model_may_have_says_which_setting_to_raise(
    serving_server: ServingServer,
) -> None:
    response = api.post(
        f"{serving_server.url}/outcrop/models/{serving_server.chat}/warm", json={"copies": 64}
    )
    assert response.status_code == 400
    message = response.json()["message"]
    assert "max_copies" in message and "OUTCROP_SERVING__DEFAULTS__MAX_COPIES" in message
