"""Fuzzed knowledge-base requests (in-process app, hypothesis): every create, update, list and Retrieve
body, well-formed or not, is answered 2xx or 4xx with a message, never a 500."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outcrop.api.app import build_services, create_app
from outcrop.envs import load_config
from outcrop.registry.importer import ImportWorker
from outcrop.registry.service import CreateImportJob
from tests.conftest import AUTH, TEST_ACCESS_KEY_ID, TEST_API_KEY, TEST_SECRET_ACCESS_KEY

pytestmark = pytest.mark.e2e

FUZZ = settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=3),
    max_leaves=8,
)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return strategy | JSON


@dataclass
class Target:
    client: Any
    kb_id: str
    ds_id: str
    model_arn: str
    root: Path


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    from fastapi.testclient import TestClient

    from outcrop.testing.tiny_embedders import build_tiny_embedder

    root = tmp_path_factory.mktemp("kb-fuzz")
    config = load_config(
        data_dir=root / "data",
        **{
            "registry.allowed_roots": [root],
            "auth.bootstrap_access_key_id": TEST_ACCESS_KEY_ID,
            "auth.bootstrap_secret_access_key": TEST_SECRET_ACCESS_KEY,
            "auth.bootstrap_api_key": TEST_API_KEY,
        },
    )
    services = build_services(
        config, start_workers=False
    )  # jobs stay queued: answers come from the request path
    folder = build_tiny_embedder(root / "embedder", family="bert")
    registry = services.registry
    job = registry.create_import_job(
        CreateImportJob(job_name="fuzz-embed", imported_model_name="fuzz-embed", source_uri=str(folder))
    )
    worker = ImportWorker(registry)
    assert registry.jobs.claim(job.id, worker.worker_id, worker.lease_seconds)
    worker.run(job.id)
    model_arn = registry.model_arn(registry.get_model("fuzz-embed"))
    (root / "docs").mkdir()
    shutil.copy(__file__, root / "docs" / "a.txt")
    client = TestClient(create_app(config, services=services), raise_server_exceptions=False)
    made = client.put(
        "/knowledgebases/",
        headers=AUTH,
        json={
            "name": "fuzz",
            "roleArn": "arn:aws:iam::123456789012:role/kb",
            "knowledgeBaseConfiguration": {
                "type": "VECTOR",
                "vectorKnowledgeBaseConfiguration": {"embeddingModelArn": model_arn},
            },
        },
    )
    assert made.status_code == 202, made.text
    kb_id = made.json()["knowledgeBase"]["knowledgeBaseId"]
    ds = client.put(
        f"/knowledgebases/{kb_id}/datasources/",
        headers=AUTH,
        json={
            "name": "docs",
            "dataSourceConfiguration": {"type": "S3", "s3Configuration": {"bucketArn": str(root / "docs")}},
        },
    )
    assert ds.status_code == 200, ds.text
    yield Target(client, kb_id, ds.json()["dataSource"]["dataSourceId"], model_arn, root)


def no_server_error(response: Any, body: Any) -> None:
    assert response.status_code < 500, (
        f"{response.status_code} for {json.dumps(body, default=str)[:500]}: {response.text[:500]}"
    )
    if response.status_code >= 400:
        assert response.json().get("message"), response.text


def kb_bodies(model_arn: str) -> st.SearchStrategy[dict[str, Any]]:
    vector = st.fixed_dictionaries(
        {},
        optional={
            "embeddingModelArn": maybe(st.sampled_from([model_arn, "fuzz-embed", "nope"])),
            "embeddingModelConfiguration": maybe(
                st.fixed_dictionaries(
                    {
                        "bedrockEmbeddingModelConfiguration": st.fixed_dictionaries(
                            {},
                            optional={
                                "dimensions": JSON,
                                "embeddingDataType": maybe(st.sampled_from(["FLOAT32", "BINARY"])),
                            },
                        )
                    }
                )
            ),
        },
    )
    return st.fixed_dictionaries(
        {},
        optional={
            "name": maybe(st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True)),
            "roleArn": maybe(st.just("arn:aws:iam::123456789012:role/kb")),
            "description": JSON,
            "clientToken": JSON,
            "tags": JSON,
            "storageConfiguration": JSON,
            "knowledgeBaseConfiguration": maybe(
                st.fixed_dictionaries(
                    {"type": maybe(st.just("VECTOR"))},
                    optional={"vectorKnowledgeBaseConfiguration": maybe(vector)},
                )
            ),
        },
    )


def ds_bodies(root: Path) -> st.SearchStrategy[dict[str, Any]]:
    s3 = st.fixed_dictionaries(
        {},
        optional={
            "bucketArn": maybe(
                st.sampled_from(
                    [str(root / "docs"), "arn:aws:s3:::bucket", "file:///etc", "s3://", "/x/../y"]
                )
            ),
            "inclusionPrefixes": JSON,
        },
    )
    chunking = st.fixed_dictionaries(
        {"chunkingStrategy": maybe(st.sampled_from(["FIXED_SIZE", "NONE", "HIERARCHICAL", "SEMANTIC"]))},
        optional={
            "fixedSizeChunkingConfiguration": JSON,
            "hierarchicalChunkingConfiguration": JSON,
            "semanticChunkingConfiguration": JSON,
        },
    )
    return st.fixed_dictionaries(
        {},
        optional={
            "name": maybe(st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True)),
            "description": JSON,
            "dataDeletionPolicy": maybe(st.sampled_from(["DELETE", "RETAIN"])),
            "dataSourceConfiguration": maybe(
                st.fixed_dictionaries({"type": maybe(st.just("S3"))}, optional={"s3Configuration": maybe(s3)})
            ),
            "vectorIngestionConfiguration": maybe(
                st.fixed_dictionaries({}, optional={"chunkingConfiguration": maybe(chunking)})
            ),
        },
    )


RETRIEVE_BODIES = st.fixed_dictionaries(
    {},
    optional={
        "retrievalQuery": maybe(st.fixed_dictionaries({}, optional={"text": JSON, "type": JSON})),
        "nextToken": JSON,
        "guardrailConfiguration": JSON,
        "retrievalConfiguration": maybe(
            st.fixed_dictionaries(
                {},
                optional={
                    "vectorSearchConfiguration": maybe(
                        st.fixed_dictionaries(
                            {},
                            optional={
                                "numberOfResults": JSON,
                                "overrideSearchType": maybe(st.sampled_from(["HYBRID", "SEMANTIC"])),
                                "filter": JSON,
                                "rerankingConfiguration": JSON,
                            },
                        )
                    )
                },
            )
        ),
    },
)
LIST_BODIES = st.fixed_dictionaries(
    {}, optional={"maxResults": JSON, "nextToken": JSON, "filters": JSON, "sortBy": JSON}
)


def test_fuzzed_knowledge_base_bodies_end_in_no_server_error(target: Target) -> None:
    @FUZZ
    @given(body=kb_bodies(target.model_arn))
    def run(body: dict[str, Any]) -> None:
        no_server_error(target.client.put("/knowledgebases/", headers=AUTH, json=body), body)
        no_server_error(target.client.put(f"/knowledgebases/{target.kb_id}", headers=AUTH, json=body), body)

    run()


def test_fuzzed_data_source_bodies_end_in_no_server_error(target: Target) -> None:
    @FUZZ
    @given(body=ds_bodies(target.root))
    def run(body: dict[str, Any]) -> None:
        path = f"/knowledgebases/{target.kb_id}/datasources/"
        no_server_error(target.client.put(path, headers=AUTH, json=body), body)
        no_server_error(target.client.put(path + target.ds_id, headers=AUTH, json=body), body)

    run()


def test_fuzzed_list_and_start_bodies_end_in_no_server_error(target: Target) -> None:
    base = f"/knowledgebases/{target.kb_id}/datasources/{target.ds_id}/ingestionjobs/"

    @FUZZ
    @given(body=LIST_BODIES)
    def run(body: dict[str, Any]) -> None:
        for path in ("/knowledgebases/", f"/knowledgebases/{target.kb_id}/datasources/", base):
            no_server_error(target.client.post(path, headers=AUTH, json=body), body)

    run()


def test_fuzzed_retrieve_bodies_end_in_no_server_error(target: Target) -> None:
    @FUZZ
    @given(
        body=RETRIEVE_BODIES,
        kb=st.sampled_from(
            ["ABCDEFGHIJ", "x", "arn:aws:bedrock:us-east-1:000000000000:knowledge-base/ABCDEFGHIJ"]
        ),
    )
    def run(body: dict[str, Any], kb: str) -> None:
        no_server_error(target.client.post(f"/knowledgebases/{kb}/retrieve", headers=AUTH, json=body), body)

    run()
