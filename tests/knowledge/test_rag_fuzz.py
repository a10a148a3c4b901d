"""Schemathesis against RetrieveAndGenerate(+Stream) (in-process app, a fake knowledge service at the
seam): no request, schema-valid or schema-breaking, may end in a 500 (the method of
tests/api/test_openapi_fuzz.py, for the bedrock-agent-runtime surface)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation import GenerationMode

from outcrop.api.app import build_services, create_app
from outcrop.envs import load_config
from outcrop.errors import NotFoundError
from outcrop.knowledge.rag import RetrieveAndGenerateRequest
from tests.conftest import AUTH, TEST_ACCESS_KEY_ID, TEST_API_KEY, TEST_SECRET_ACCESS_KEY

TAG = "bedrock-agent-runtime knowledge bases"
PATHS = ("/retrieveAndGenerate", "/retrieveAndGenerateStream")
EXAMPLES_PER_OPERATION = 20


class FakeKnowledge:
    # The app's lifespan starts and stops the knowledge service it finds at the seam.
    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def retrieve(
        self,
        knowledge_base_id: str,
        text: str,
        *,
        number_of_results: int = 5,
        search_type: str | None = None,
        filter: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        raise NotFoundError("Knowledge base", knowledge_base_id)


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("rag-fuzz")
    config = load_config(
        data_dir=root / "data",
        **{
            "auth.bootstrap_access_key_id": TEST_ACCESS_KEY_ID,
            "auth.bootstrap_secret_access_key": TEST_SECRET_ACCESS_KEY,
            "auth.bootstrap_api_key": TEST_API_KEY,
        },
    )
    services = build_services(config, start_workers=False)
    services.extra["knowledge"] = FakeKnowledge()  # the production seam
    app = create_app(config, services=services)
    raw = copy.deepcopy(app.openapi())
    components = raw.setdefault("components", {}).setdefault("schemas", {})
    body = RetrieveAndGenerateRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(body.pop("$defs", {}))
    components[RetrieveAndGenerateRequest.__name__] = body
    ref = {"$ref": f"#/components/schemas/{RetrieveAndGenerateRequest.__name__}"}
    for path in PATHS:
        assert TAG in raw["paths"][path]["post"]["tags"]
        raw["paths"][path]["post"]["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": ref}},
        }
    fuzzed = schemathesis.openapi.from_dict(raw)
    fuzzed.app = app
    return fuzzed


FUZZ = settings(
    max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)


@pytest.mark.parametrize("mode", list(GenerationMode), ids=lambda m: m.value)
@pytest.mark.parametrize("path", PATHS)
def test_no_fuzzed_retrieve_and_generate_request_ends_in_a_server_error(
    schema: Any, path: str, mode: GenerationMode
) -> None:
    @FUZZ
    @given(case=schema[path]["POST"].as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        response = case.call(headers=AUTH)
        assert response.status_code < 500, (
            f"{response.status_code} for {case.as_curl_command()}: {response.text[:1000]}"
        )

    try:
        run()
    except Unsatisfiable:
        if mode is GenerationMode.POSITIVE:
            raise
