"""Embedding models end to end: imported through boto3 into a real ``outcrop serve``, served by
embedding copies, reached with the openai SDK, boto3 InvokeModel (Titan and Cohere bodies) and
LangChain; vectors equal sentence-transformers' own ``encode`` on the same folder."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from outcrop.testing.tiny_embedders import build_tiny_embedder
from tests.conftest import (
    TEST_ACCESS_KEY_ID,
    TEST_API_KEY,
    TEST_SECRET_ACCESS_KEY,
    ServerProcess,
    api,
    boto3_client,
    import_and_wait,
    server_env,
    wait_for_job,
)

openai = pytest.importorskip("openai")
sentence_transformers = pytest.importorskip("sentence_transformers")

os.environ.setdefault("LANGCHAIN_TRACING_V2", "false")
os.environ.setdefault("LANGSMITH_TRACING", "false")

pytestmark = pytest.mark.e2e

TEXTS = ["hello world", "The quick brown fox jumps over the lazy dog.", "你好，世界", "a"]


@dataclass
class EmbeddingServer:
    server: ServerProcess
    folders: dict[str, Path]
    arns: dict[str, str]

    @property
    def url(self) -> str:
        return self.server.url

    def reference(self, name: str, texts: list[str]) -> np.ndarray:
        model = sentence_transformers.SentenceTransformer(str(self.folders[name]), device="cpu")
        return np.asarray(model.encode(texts, convert_to_numpy=True))


@pytest.fixture(scope="module")
def embedding_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddingServer]:
    from outcrop.testing.tiny_models import build_tiny_model

    root = tmp_path_factory.mktemp("embedding-server")
    env = server_env(root, OUTCROP_SERVING__WORKER_THREADS="1")
    server = ServerProcess(data_dir=root / "data", env=env, import_root=root).start()
    bedrock = boto3_client("bedrock", server.url)
    folders = {
        "bert-embed": build_tiny_embedder(root / "bert-embed", family="bert"),
        "qwen3-embed": build_tiny_embedder(root / "qwen3-embed", family="qwen3", matryoshka=True),
        "text-model": build_tiny_model(root / "text-model", family="llama"),
        "xlmr-embed": build_tiny_embedder(root / "xlmr-embed", family="xlm-roberta", pooling="cls"),
    }
    arns = {}
    for name, folder in folders.items():
        arns[name] = import_and_wait(bedrock, folder, name)["importedModelArn"]
    for name in ("bert-embed", "qwen3-embed"):
        response = api.post(f"{server.url}/outcrop/models/{name}/warm", json={"copies": 1}, timeout=180)
        assert response.status_code == 200, response.text
    yield EmbeddingServer(server=server, folders=folders, arns=arns)
    server.stop()


def _openai(server: EmbeddingServer) -> Any:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=TEST_API_KEY, max_retries=0)


def _runtime(server: EmbeddingServer) -> Any:
    return boto3_client("bedrock-runtime", server.url, retries={"max_attempts": 8, "mode": "standard"})


def test_imported_embedding_model_answers_get_imported_model_as_bedrock_does(
    embedding_server: EmbeddingServer,
) -> None:
    bedrock = boto3_client("bedrock", embedding_server.url)
    model = bedrock.get_imported_model(modelIdentifier="bert-embed")
    assert model["modelArchitecture"] == "bert"
    assert model["instructSupported"] is False
    detail = api.get(f"{embedding_server.url}/outcrop/models/bert-embed").json()
    assert detail["kind"] == "embedding" and detail["architecture"] == "BertModel"
    assert (detail["embeddingDimension"], detail["embeddingPooling"]) == (64, "mean")
    assert detail["embeddingTruncatable"] is False
    qwen = api.get(f"{embedding_server.url}/outcrop/models/qwen3-embed").json()
    assert (qwen["embeddingPooling"], qwen["embeddingTruncatable"]) == ("lasttoken", True)


@pytest.mark.parametrize("name", ["bert-embed", "qwen3-embed"])
def test_openai_sdk_default_base64_equals_sentence_transformers_encode(
    embedding_server: EmbeddingServer, name: str
) -> None:
    client = _openai(embedding_server)
    result = client.embeddings.create(model=name, input=TEXTS)  # the SDK asks for base64
    got = np.array([d.embedding for d in result.data], dtype=np.float32)
    np.testing.assert_allclose(got, embedding_server.reference(name, TEXTS), atol=1e-5)
    assert [d.index for d in result.data] == list(range(len(TEXTS)))
    assert result.usage.prompt_tokens > len(TEXTS)
    assert result.model == name


def test_float_encoding_and_token_id_inputs(embedding_server: EmbeddingServer) -> None:
    client = _openai(embedding_server)
    floats = client.embeddings.create(model="bert-embed", input="hello world", encoding_format="float")
    reference = embedding_server.reference("bert-embed", ["hello world"])[0]
    np.testing.assert_allclose(np.array(floats.data[0].embedding), reference, atol=1e-5)
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(str(embedding_server.folders["bert-embed"]))("hello world")[
        "input_ids"
    ]
    by_ids = client.embeddings.create(model="bert-embed", input=[ids, ids], encoding_format="float")
    assert len(by_ids.data) == 2
    np.testing.assert_allclose(np.array(by_ids.data[1].embedding), reference, atol=1e-5)


def test_dimensions_truncate_a_matryoshka_model_and_are_refused_otherwise(
    embedding_server: EmbeddingServer,
) -> None:
    client = _openai(embedding_server)
    short = client.embeddings.create(model="qwen3-embed", input="hello world", dimensions=16)
    vector = np.array(short.data[0].embedding)
    assert vector.shape == (16,)
    assert abs(np.linalg.norm(vector) - 1.0) < 1e-4  # renormalized after truncation
    full = embedding_server.reference("qwen3-embed", ["hello world"])[0][:16]
    np.testing.assert_allclose(vector, full / np.linalg.norm(full), atol=1e-5)
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model="bert-embed", input="hello", dimensions=16)
    assert "Matryoshka" in str(info.value) and info.value.body["param"] == "dimensions"
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model="bert-embed", input="hello", dimensions=65)
    assert "64" in str(info.value)


def test_titan_body_through_boto3_invoke_model(embedding_server: EmbeddingServer) -> None:
    import json

    runtime = _runtime(embedding_server)
    response = runtime.invoke_model(
        modelId=embedding_server.arns["bert-embed"], body=json.dumps({"inputText": "hello world"})
    )
    answer = json.loads(response["body"].read())
    reference = embedding_server.reference("bert-embed", ["hello world"])[0]
    np.testing.assert_allclose(np.array(answer["embedding"]), reference, atol=1e-5)
    assert answer["inputTextTokenCount"] == 4  # [CLS] hello world [SEP]
    assert answer["embeddingsByType"]["float"] == answer["embedding"]
    assert response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-bedrock-input-token-count"] == "4"
    short = json.loads(
        runtime.invoke_model(
            modelId="qwen3-embed",
            body=json.dumps(
                {"inputText": "hello", "dimensions": 32, "normalize": True, "embeddingTypes": ["binary"]}
            ),
        )["body"].read()
    )
    assert len(short["embedding"]) == 32 and set(short["embeddingsByType"]["binary"]) <= {0, 1}


def test_cohere_body_through_boto3_invoke_model(embedding_server: EmbeddingServer) -> None:
    import json

    runtime = _runtime(embedding_server)
    answer = json.loads(
        runtime.invoke_model(
            modelId="bert-embed", body=json.dumps({"texts": TEXTS, "input_type": "search_document"})
        )["body"].read()
    )
    assert answer["response_type"] == "embeddings_floats" and answer["texts"] == TEXTS and answer["id"]
    np.testing.assert_allclose(
        np.array(answer["embeddings"]), embedding_server.reference("bert-embed", TEXTS), atol=1e-5
    )
    by_type = json.loads(
        runtime.invoke_model(
            modelId="bert-embed",
            body=json.dumps({"texts": ["a"], "input_type": "search_query", "embedding_types": ["float"]}),
        )["body"].read()
    )
    assert by_type["response_type"] == "embeddings_by_type" and len(by_type["embeddings"]["float"]) == 1


def test_wrong_kind_of_model_is_a_clear_400_in_each_dialect(embedding_server: EmbeddingServer) -> None:
    import json

    client = _openai(embedding_server)
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="bert-embed", prompt="hi", max_tokens=4)
    assert info.value.code == "model_kind_mismatch" and "embedding model" in str(info.value)
    with pytest.raises(openai.BadRequestError) as info:  # not "add a chat template": it is the wrong kind
        client.chat.completions.create(model="bert-embed", messages=[{"role": "user", "content": "hi"}])
    assert info.value.code == "model_kind_mismatch" and "embedding model" in str(info.value)
    with pytest.raises(_runtime(embedding_server).exceptions.ValidationException) as converse:
        _runtime(embedding_server).converse(
            modelId="bert-embed", messages=[{"role": "user", "content": [{"text": "hi"}]}]
        )
    assert "is an embedding model" in str(converse.value)
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model="text-model", input="hi")
    assert info.value.code == "model_kind_mismatch" and "text-generation model" in str(info.value)
    runtime = _runtime(embedding_server)
    for model, body in (
        ("bert-embed", {"prompt": "hi", "max_gen_len": 4}),
        ("text-model", {"inputText": "hi"}),
        ("text-model", {"texts": ["hi"], "input_type": "search_query"}),
    ):
        with pytest.raises(runtime.exceptions.ValidationException) as error:
            runtime.invoke_model(modelId=model, body=json.dumps(body))
        assert "embedding" in str(error.value)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"model": "bert-embed", "input": ""}, "empty"),
        ({"model": "bert-embed", "input": []}, "empty"),
        ({"model": "bert-embed", "input": [1.5]}, "must be a string"),
        ({"model": "bert-embed", "input": "x", "encoding_format": "int8"}, "'float' or 'base64'"),
        ({"model": "bert-embed", "input": "x", "dimension": 3}, "Unknown parameter 'dimension'"),
        ({"model": "bert-embed", "input": [[1, 99999]]}, "outside this model's vocabulary"),
        ({"input": "x"}, "'model' is required"),
    ],
)
def test_bad_openai_bodies_answer_400_naming_the_fix(
    embedding_server: EmbeddingServer, body: dict[str, Any], words: str
) -> None:
    response = api.post(f"{embedding_server.url}/v1/embeddings", json=body)
    assert response.status_code == 400, response.text
    assert words in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"inputText": ""}, "non-empty string"),
        ({"inputText": "x", "normalize": "yes"}, "true or false"),
        ({"inputText": "x", "embeddingTypes": ["int8"]}, "'float' and/or 'binary'"),
        ({"texts": []}, "non-empty list"),
        ({"texts": ["x"], "input_type": "query"}, "search_document"),
        ({"texts": ["x"], "embedding_types": ["int8"]}, "['float'] only"),
    ],
)
def test_bad_invoke_bodies_answer_validation_exception(
    embedding_server: EmbeddingServer, body: dict[str, Any], words: str
) -> None:
    import json

    runtime = _runtime(embedding_server)
    with pytest.raises(runtime.exceptions.ValidationException) as error:
        runtime.invoke_model(modelId="bert-embed", body=json.dumps(body))
    assert words in str(error.value)


def test_langchain_openai_and_bedrock_embeddings(embedding_server: EmbeddingServer) -> None:
    langchain_openai = pytest.importorskip("langchain_openai")
    langchain_aws = pytest.importorskip("langchain_aws")
    reference = embedding_server.reference("bert-embed", TEXTS)
    oai = langchain_openai.OpenAIEmbeddings(
        model="bert-embed",
        base_url=f"{embedding_server.url}/v1",
        api_key=TEST_API_KEY,
        check_embedding_ctx_length=False,
        max_retries=0,
    )
    np.testing.assert_allclose(np.array(oai.embed_documents(TEXTS)), reference, atol=1e-5)
    np.testing.assert_allclose(np.array(oai.embed_query(TEXTS[0])), reference[0], atol=1e-5)
    aws = {
        "endpoint_url": embedding_server.url,
        "region_name": "us-east-1",
        "aws_access_key_id": TEST_ACCESS_KEY_ID,
        "aws_secret_access_key": TEST_SECRET_ACCESS_KEY,
    }
    for provider in ("amazon", "cohere"):
        bedrock = langchain_aws.BedrockEmbeddings(
            model_id=embedding_server.arns["bert-embed"], provider=provider, **aws
        )
        np.testing.assert_allclose(np.array(bedrock.embed_documents(TEXTS)), reference, atol=1e-5)
        np.testing.assert_allclose(np.array(bedrock.embed_query(TEXTS[1])), reference[1], atol=1e-5)


def test_concurrent_requests_share_forwards_and_each_gets_its_own_vector(
    embedding_server: EmbeddingServer,
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    client = _openai(embedding_server)
    texts = [f"text number {i} " * (1 + i % 5) for i in range(48)]
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda t: client.embeddings.create(model="bert-embed", input=t), texts))
    got = np.array([r.data[0].embedding for r in results], dtype=np.float32)
    np.testing.assert_allclose(got, embedding_server.reference("bert-embed", texts), atol=1e-5)


def test_embedding_import_failures_name_the_file_and_fix(
    embedding_server: EmbeddingServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    import json

    root = embedding_server.server.import_root
    bad = root / "bad-embed"
    shutil.copytree(embedding_server.folders["bert-embed"], bad)
    (bad / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 32, "pooling_mode": "max"})
    )
    bedrock = boto3_client("bedrock", embedding_server.url)
    arn = bedrock.create_model_import_job(
        jobName="import-bad-embed",
        importedModelName="bad-embed",
        roleArn="arn:aws:iam::123456789012:role/Importer",
        modelDataSource={"s3DataSource": {"s3Uri": str(bad)}},
    )["jobArn"]
    job = wait_for_job(bedrock, arn)
    assert job["status"] == "Failed"
    assert "1_Pooling/config.json" in job["failureMessage"] and "'max'" in job["failureMessage"]


def test_batch_job_over_an_embedding_model_answers_what_invoke_model_answers(
    embedding_server: EmbeddingServer,
) -> None:
    import json
    import time

    root = embedding_server.server.import_root / "embedding-batch"
    (root / "in").mkdir(parents=True)
    records = [
        {"recordId": "titan", "modelInput": {"inputText": "hello world"}},
        {"recordId": "cohere", "modelInput": {"texts": TEXTS[:2], "input_type": "search_document"}},
        {"recordId": "prompt", "modelInput": {"prompt": "hi", "max_gen_len": 3}},
    ]
    (root / "in" / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    bedrock = boto3_client("bedrock", embedding_server.url)
    arn = bedrock.create_model_invocation_job(
        jobName="embedding-batch",
        roleArn="arn:aws:iam::123456789012:role/Batch",
        modelId=embedding_server.arns["bert-embed"],
        inputDataConfig={"s3InputDataConfig": {"s3Uri": str(root / "in")}},
        outputDataConfig={"s3OutputDataConfig": {"s3Uri": str(root / "out")}},
    )["jobArn"]
    deadline = time.monotonic() + 120
    while (job := bedrock.get_model_invocation_job(jobIdentifier=arn))["status"] not in (
        "Completed",
        "PartiallyCompleted",
        "Failed",
    ):
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
    assert (job["status"], job["successRecordCount"], job["errorRecordCount"]) == ("Completed", 2, 1)
    out = root / "out" / arn.rsplit("/", 1)[-1] / "records.jsonl.out"
    lines = {line["recordId"]: line for line in map(json.loads, out.read_text().splitlines())}
    reference = embedding_server.reference("bert-embed", TEXTS[:2])
    np.testing.assert_allclose(lines["titan"]["modelOutput"]["embedding"], reference[0], atol=1e-5)
    assert lines["titan"]["modelOutput"]["inputTextTokenCount"] == 4
    np.testing.assert_allclose(lines["cohere"]["modelOutput"]["embeddings"], reference, atol=1e-5)
    assert lines["prompt"]["error"]["errorCode"] == 400
    assert "embedding model" in lines["prompt"]["error"]["errorMessage"]


def test_a_cold_embedding_model_starts_a_copy_on_first_invoke_as_bedrock_does(
    embedding_server: EmbeddingServer,
) -> None:
    """ModelNotReadyException at once (429), a copy of the embedding worker starts, boto3's retries succeed."""
    import json

    runtime = boto3_client("bedrock-runtime", embedding_server.url)  # no retries
    with pytest.raises(runtime.exceptions.ModelNotReadyException):
        runtime.invoke_model(modelId="xlmr-embed", body=json.dumps({"inputText": "hello world"}))
    patient = boto3_client(
        "bedrock-runtime", embedding_server.url, retries={"max_attempts": 30, "mode": "standard"}
    )
    answer = json.loads(
        patient.invoke_model(modelId="xlmr-embed", body=json.dumps({"inputText": "hello world"}))[
            "body"
        ].read()
    )
    reference = embedding_server.reference("xlmr-embed", ["hello world"])[0]
    np.testing.assert_allclose(np.array(answer["embedding"]), reference, atol=1e-5)
    copies = api.get(f"{embedding_server.url}/outcrop/copies").json()
    assert any(c["modelName"] == "xlmr-embed" for c in copies["copies"]), copies
