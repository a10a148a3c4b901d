"""Fuzzed guardrail bodies against the in-process app: CreateGuardrail/UpdateGuardrail, ApplyGuardrail and
guardrailConfig on Converse/InvokeModel end in a clear 4xx, never a 500."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outcrop.api.app import build_services, create_app
from outcrop.envs import load_config
from tests.api.test_openapi_fuzz import JSON_VALUES, _sometimes
from tests.conftest import AUTH, TEST_ACCESS_KEY_ID, TEST_API_KEY, TEST_SECRET_ACCESS_KEY

VALID = {
    "name": "fuzzed",
    "blockedInputMessaging": "no",
    "blockedOutputsMessaging": "no",
    "wordPolicyConfig": {"wordsConfig": [{"text": "zephyr"}]},
    "sensitiveInformationPolicyConfig": {"piiEntitiesConfig": [{"type": "EMAIL", "action": "ANONYMIZE"}]},
}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    root: Path = tmp_path_factory.mktemp("guardrail-fuzz")
    config = load_config(
        data_dir=root / "data",
        **{
            "auth.bootstrap_access_key_id": TEST_ACCESS_KEY_ID,
            "auth.bootstrap_secret_access_key": TEST_SECRET_ACCESS_KEY,
            "auth.bootstrap_api_key": TEST_API_KEY,
        },
    )
    app = create_app(config, services=build_services(config, start_workers=False))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def policy_bodies() -> st.SearchStrategy[dict[str, Any]]:
    word = st.fixed_dictionaries(
        {"text": _sometimes(st.text(max_size=6))},
        optional={"inputAction": _sometimes(st.sampled_from(["BLOCK", "NONE"])), "inputEnabled": JSON_VALUES},
    )
    pii = st.fixed_dictionaries(
        {"type": _sometimes(st.sampled_from(["EMAIL", "PHONE", "NAME", "CA_HEALTH_NUMBER", "x"]))},
        optional={"action": _sometimes(st.sampled_from(["BLOCK", "ANONYMIZE", "NONE"]))},
    )
    regex = st.fixed_dictionaries(
        {"name": _sometimes(st.text(max_size=4)), "pattern": _sometimes(st.text(max_size=8))},
        optional={"action": _sometimes(st.sampled_from(["BLOCK", "ANONYMIZE"]))},
    )
    topic = st.fixed_dictionaries(
        {"name": _sometimes(st.text(max_size=6)), "definition": _sometimes(st.text(max_size=10))},
        optional={
            "examples": _sometimes(st.lists(st.text(max_size=10), max_size=3)),
            "type": _sometimes(st.just("DENY")),
        },
    )
    overrides = st.fixed_dictionaries(
        {},
        optional={
            "name": _sometimes(st.text(max_size=8)),
            "blockedInputMessaging": _sometimes(st.text(max_size=4)),
            "wordPolicyConfig": _sometimes(
                st.fixed_dictionaries({}, optional={"wordsConfig": _sometimes(st.lists(word, max_size=3))})
            ),
            "sensitiveInformationPolicyConfig": _sometimes(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "piiEntitiesConfig": _sometimes(st.lists(pii, max_size=3)),
                        "regexesConfig": _sometimes(st.lists(regex, max_size=2)),
                    },
                )
            ),
            "topicPolicyConfig": _sometimes(
                st.fixed_dictionaries({"topicsConfig": _sometimes(st.lists(topic, max_size=2))})
            ),
            "contentPolicyConfig": JSON_VALUES,
            "tags": _sometimes(
                st.lists(st.fixed_dictionaries({"key": JSON_VALUES, "value": JSON_VALUES}), max_size=2)
            ),
        },
    )
    return st.builds(lambda o: {**VALID, **o}, overrides)


def test_fuzzed_guardrail_bodies_end_in_no_server_error(client: Any) -> None:
    created = client.post("/guardrails", json={**VALID, "name": "seed"}, headers=AUTH)
    assert created.status_code == 202, created.text
    gid = created.json()["guardrailId"]

    @settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(
        body=policy_bodies() | JSON_VALUES,
        target=st.sampled_from(["create", "update", "apply", "converse", "invoke", "get"]),
        text=st.text(max_size=30),
        version=st.sampled_from(["DRAFT", "1", "0", "x", "99999999999"]),
    )
    def run(body: Any, target: str, text: str, version: str) -> None:
        if target == "create":
            response = client.post("/guardrails", content=json.dumps(body), headers=AUTH)
        elif target == "update":
            response = client.put(f"/guardrails/{gid}", content=json.dumps(body), headers=AUTH)
        elif target == "apply":
            payload = (
                {"source": "INPUT", "content": [{"text": {"text": text}}]} if isinstance(body, dict) else body
            )
            response = client.post(
                f"/guardrail/{gid}/version/{version}/apply", content=json.dumps(payload), headers=AUTH
            )
        elif target == "get":
            response = client.get(f"/guardrails/{gid}", params={"guardrailVersion": version}, headers=AUTH)
        elif target == "converse":
            config = (
                {"guardrailIdentifier": gid, "guardrailVersion": version} if isinstance(body, dict) else body
            )
            payload = {
                "messages": [{"role": "user", "content": [{"guardContent": {"text": {"text": text}}}]}],
                "guardrailConfig": config,
            }
            response = client.post("/model/absent/converse", content=json.dumps(payload), headers=AUTH)
        else:
            headers = {
                **AUTH,
                "X-Amzn-Bedrock-GuardrailIdentifier": gid,
                "X-Amzn-Bedrock-GuardrailVersion": version,
            }
            payload = {"prompt": text or "x", "amazon-bedrock-guardrailConfig": body}
            response = client.post("/model/absent/invoke", content=json.dumps(payload), headers=headers)
        assert response.status_code < 500, (
            f"{response.status_code} for {target} {json.dumps(body)[:300]}: {response.text[:400]}"
        )

    run()
