"""Schemathesis against the Prompt management routes (in-process app): no request, schema-valid or
schema-breaking, on unknown or existing prompts, may end in a 500 (the same method as
tests/api/test_openapi_fuzz.py, for the bedrock-agent surface)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from pydantic import BaseModel
from schemathesis.generation import GenerationMode

from outcrop.api.agent.prompts import CreatePromptRequest, CreatePromptVersionRequest
from outcrop.api.app import build_services, create_app
from outcrop.envs import load_config
from outcrop.prompts.spec import PromptContent
from tests.conftest import AUTH, TEST_ACCESS_KEY_ID, TEST_API_KEY, TEST_SECRET_ACCESS_KEY
from tests.prompts.builders import prompt_request

TAG = "bedrock-agent prompt management"
# The bodies the routes read by hand (for Bedrock-worded errors), added to the OpenAPI for the fuzzer.
HAND_READ_BODIES: dict[tuple[str, str], type[BaseModel]] = {
    ("/prompts/", "post"): CreatePromptRequest,
    ("/prompts/{promptIdentifier}/", "put"): PromptContent,
    ("/prompts/{promptIdentifier}/versions", "post"): CreatePromptVersionRequest,
}
EXAMPLES_PER_OPERATION = 30


@dataclass
class Target:
    schema: Any
    operations: list[tuple[str, str]]
    prompt_id: str


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Target:
    root = tmp_path_factory.mktemp("prompt-fuzz")
    config = load_config(
        data_dir=root / "data",
        **{
            "auth.bootstrap_access_key_id": TEST_ACCESS_KEY_ID,
            "auth.bootstrap_secret_access_key": TEST_SECRET_ACCESS_KEY,
            "auth.bootstrap_api_key": TEST_API_KEY,
        },
    )
    services = build_services(config, start_workers=False)
    seeded = services.extra["prompts"].create(PromptContent.model_validate(prompt_request(name="seeded")))
    services.extra["prompts"].create_version(seeded.prompt_id)
    app = create_app(config, services=services)
    raw = copy.deepcopy(app.openapi())
    components = raw.setdefault("components", {}).setdefault("schemas", {})
    for (path, method), wire in HAND_READ_BODIES.items():
        body = wire.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(body.pop("$defs", {}))
        components[wire.__name__] = body
        raw["paths"][path][method]["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{wire.__name__}"}}},
        }
    operations = sorted(
        (
            (method.upper(), path)
            for path, ops in raw["paths"].items()
            for method, op in ops.items()
            if TAG in op.get("tags", [])
        ),
        key=lambda op: op[0] == "DELETE",
    )
    schema = schemathesis.openapi.from_dict(raw)
    schema.app = app
    return Target(schema=schema, operations=operations, prompt_id=seeded.prompt_id)


FUZZ = settings(
    max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)


def check(case: schemathesis.Case) -> None:
    response = case.call(headers=AUTH)
    assert response.status_code < 500, (
        f"{response.status_code} for {case.as_curl_command()}: {response.text[:1000]}"
    )


def test_every_prompt_operation_is_fuzzed(target: Target) -> None:
    assert len(target.operations) == 6


@pytest.mark.parametrize("mode", list(GenerationMode), ids=lambda m: m.value)
def test_no_fuzzed_prompt_request_ends_in_a_server_error(target: Target, mode: GenerationMode) -> None:
    for method, path in target.operations:

        @FUZZ
        @given(case=target.schema[path][method].as_strategy(generation_mode=mode))
        def run(case: schemathesis.Case) -> None:
            check(case)

        try:
            run()
        except Unsatisfiable:
            if mode is GenerationMode.POSITIVE:
                raise


def test_fuzzed_requests_on_an_existing_prompt_end_in_no_server_error(target: Target) -> None:
    for method, path in target.operations:
        if "{" not in path:
            continue

        @FUZZ
        @given(
            case=target.schema[path][method].as_strategy(
                path_parameters={"promptIdentifier": target.prompt_id}
            )
        )
        def run(case: schemathesis.Case) -> None:
            check(case)

        run()
