"""Guardrails on the runtime through real clients (boto3 ``bedrock-runtime``, LangChain) against a real server
whose copies are null copies in echo mode (``--echo --request-log``): what reached the copy is read from its
request log, and what it answers is what it was sent, so PII can be followed in both directions."""

from __future__ import annotations

import json
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServerProcess, api, boto3_client, import_and_wait, server_env
from tests.shapes import check_event, check_output, record_raw_bodies

pytestmark = pytest.mark.e2e

BLOCKED_INPUT = "Sorry, I cannot help with that request."
BLOCKED_OUTPUT = "Sorry, the answer was withheld."
EMAIL = "jane.doe@example.com"


@dataclass
class EchoServer:
    server: ServerProcess
    model: str
    request_log: Path
    guardrail_id: str
    guardrail_arn: str

    @property
    def url(self) -> str:
        return self.server.url

    def copy_requests(self) -> list[dict[str, Any]]:
        if not self.request_log.exists():
            return []
        return [json.loads(line) for line in self.request_log.read_text().splitlines()]


def _guardrail(bedrock: Any) -> dict[str, Any]:
    return bedrock.create_guardrail(
        name=f"runtime-{uuid.uuid4().hex[:6]}",
        blockedInputMessaging=BLOCKED_INPUT,
        blockedOutputsMessaging=BLOCKED_OUTPUT,
        wordPolicyConfig={
            "wordsConfig": [{"text": "project zephyr"}],
            "managedWordListsConfig": [{"type": "PROFANITY"}],
        },
        sensitiveInformationPolicyConfig={
            "piiEntitiesConfig": [
                {"type": "EMAIL", "action": "ANONYMIZE"},
                {"type": "US_SOCIAL_SECURITY_NUMBER", "action": "BLOCK"},
            ],
            "regexesConfig": [{"name": "ORDER_ID", "pattern": r"ORD-\d{6}", "action": "ANONYMIZE"}],
        },
        topicPolicyConfig={
            "topicsConfig": [
                {
                    "name": "Investment advice",
                    "definition": "Recommendations about investing money in stocks, bonds or funds.",
                    "examples": ["Which stocks should I buy?"],
                    "type": "DENY",
                }
            ]
        },
    )


@pytest.fixture(scope="module")
def echo(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_cache: Callable[..., Path]
) -> Iterator[EchoServer]:
    root = tmp_path_factory.mktemp("guardrails-runtime")
    log = root / "copy-requests.jsonl"
    template = (
        f"{sys.executable} -m outcrop.testing.nullcopy --port {{port}} --host {{host}} "
        f"--served-name {{served_name}} --model-dir {{model_dir}} --echo --request-log {log}"
    )
    env = server_env(root, OUTCROP_SERVING__LAUNCHER="command", OUTCROP_SERVING__COMMAND_TEMPLATE=template)
    server = ServerProcess(data_dir=root / "data", env=env, import_root=root).start()
    bedrock = boto3_client("bedrock", server.url)
    dest = root / "echo"
    shutil.copytree(tiny_model_cache(family="llama"), dest)
    import_and_wait(bedrock, dest, "echo")
    r = api.post(f"{server.url}/outcrop/models/echo/warm", json={"copies": 1}, timeout=120)
    assert r.status_code == 200, r.text
    created = _guardrail(bedrock)
    yield EchoServer(server, "echo", log, created["guardrailId"], created["guardrailArn"])
    server.stop()


@pytest.fixture
def runtime(echo: EchoServer) -> Any:
    return boto3_client("bedrock-runtime", echo.url)


def _user(*blocks: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": list(blocks)}]


# -- ApplyGuardrail --------------------------------------------------------------------------------


def test_apply_guardrail_blocks_masks_and_passes_with_botocore_shapes(echo: EchoServer, runtime: Any) -> None:
    raw = record_raw_bodies(runtime)

    def apply(text: str, **kw: Any) -> dict[str, Any]:
        out: dict[str, Any] = runtime.apply_guardrail(
            guardrailIdentifier=echo.guardrail_id,
            guardrailVersion="DRAFT",
            source=kw.pop("source", "INPUT"),
            content=[{"text": {"text": text}}],
            **kw,
        )
        check_output(runtime, "ApplyGuardrail", raw["ApplyGuardrail"])
        return out

    masked = apply(f"Write to {EMAIL} about ORD-123456.")
    assert masked["action"] == "GUARDRAIL_INTERVENED"
    assert masked["outputs"] == [{"text": "Write to {EMAIL} about {ORDER_ID}."}]
    sensitive = masked["assessments"][0]["sensitiveInformationPolicy"]
    assert sensitive["piiEntities"] == [
        {"match": EMAIL, "type": "EMAIL", "action": "ANONYMIZED", "detected": True}
    ]
    assert sensitive["regexes"][0]["name"] == "ORDER_ID" and sensitive["regexes"][0]["action"] == "ANONYMIZED"

    blocked = apply("My SSN is 536-22-8726.")
    assert blocked["action"] == "GUARDRAIL_INTERVENED" and blocked["outputs"] == [{"text": BLOCKED_INPUT}]
    assert blocked["assessments"][0]["sensitiveInformationPolicy"]["piiEntities"][0]["action"] == "BLOCKED"

    for text, policy in (
        ("Tell me about Project Zephyr.", "wordPolicy"),
        ("What the fuck is this?", "wordPolicy"),
        ("Which stocks should I buy this year?", "topicPolicy"),
    ):
        result = apply(text, source="OUTPUT")
        assert result["outputs"] == [{"text": BLOCKED_OUTPUT}], text
        assert policy in result["assessments"][0], text

    clean = apply("What is the capital of France?", outputScope="FULL")
    assert clean["action"] == "NONE" and clean["outputs"] == []
    assert clean["assessments"][0]["topicPolicy"]["topics"][0]["detected"] is False
    assert clean["usage"]["wordPolicyUnits"] == 1


def test_a_numbered_version_keeps_answering_the_same_after_the_draft_changes(
    echo: EchoServer, runtime: Any
) -> None:
    bedrock = boto3_client("bedrock", echo.url)
    created = bedrock.create_guardrail(
        name=f"versioned-{uuid.uuid4().hex[:6]}",
        blockedInputMessaging="v1 says no",
        blockedOutputsMessaging="no",
        wordPolicyConfig={"wordsConfig": [{"text": "alpha"}]},
    )
    arn = created["guardrailArn"]
    assert bedrock.create_guardrail_version(guardrailIdentifier=arn)["version"] == "1"
    bedrock.update_guardrail(
        guardrailIdentifier=arn,
        name=bedrock.get_guardrail(guardrailIdentifier=arn)["name"],
        blockedInputMessaging="draft says no",
        blockedOutputsMessaging="no",
        wordPolicyConfig={"wordsConfig": [{"text": "beta"}]},
    )
    time.sleep(1.1)  # past the runtime's resolve cache, so the draft's change is seen

    def apply(version: str, text: str) -> list[dict[str, str]]:
        out: list[dict[str, str]] = runtime.apply_guardrail(
            guardrailIdentifier=arn,
            guardrailVersion=version,
            source="INPUT",
            content=[{"text": {"text": text}}],
        )["outputs"]
        return out

    assert apply("1", "alpha") == [{"text": "v1 says no"}] and apply("1", "beta") == []
    assert apply("DRAFT", "beta") == [{"text": "draft says no"}] and apply("DRAFT", "alpha") == []


def test_apply_guardrail_errors_are_clear(echo: EchoServer, runtime: Any) -> None:
    with pytest.raises(runtime.exceptions.ResourceNotFoundException):
        runtime.apply_guardrail(
            guardrailIdentifier="zzzzzzzzzzzz",
            guardrailVersion="DRAFT",
            source="INPUT",
            content=[{"text": {"text": "x"}}],
        )
    with pytest.raises(runtime.exceptions.ResourceNotFoundException) as info:
        runtime.apply_guardrail(
            guardrailIdentifier=echo.guardrail_id,
            guardrailVersion="9",
            source="INPUT",
            content=[{"text": {"text": "x"}}],
        )
    assert "CreateGuardrailVersion" in info.value.response["Error"]["Message"]


# -- Converse --------------------------------------------------------------------------------------


def test_converse_masks_pii_in_both_directions_and_reports_the_trace(echo: EchoServer, runtime: Any) -> None:
    raw = record_raw_bodies(runtime)
    before = len(echo.copy_requests())
    # The guarded block is masked before the copy sees it; the unguarded text reaches the copy as is,
    # comes back in the echo, and is masked on the way out.
    answer = runtime.converse(
        modelId=echo.model,
        messages=_user(
            {"guardContent": {"text": {"text": f"Mail {EMAIL} please. "}}},
            {"text": "Or backup@example.org"},
        ),
        guardrailConfig={
            "guardrailIdentifier": echo.guardrail_arn,
            "guardrailVersion": "DRAFT",
            "trace": "enabled",
        },
    )
    check_output(runtime, "Converse", raw["Converse"])
    sent = echo.copy_requests()[before:]
    assert len(sent) == 1
    assert sent[0]["messages"][-1]["content"] == "Mail {EMAIL} please. Or backup@example.org"
    assert answer["output"]["message"]["content"] == [{"text": "Mail {EMAIL} please. Or {EMAIL}"}]
    assert answer["stopReason"] == "guardrail_intervened"
    trace = answer["trace"]["guardrail"]
    assert (
        trace["inputAssessment"][echo.guardrail_id]["sensitiveInformationPolicy"]["piiEntities"][0]["match"]
        == EMAIL
    )
    out = trace["outputAssessments"][echo.guardrail_id][0]["sensitiveInformationPolicy"]["piiEntities"]
    assert [e["match"] for e in out] == ["backup@example.org"]


def test_a_blocked_input_never_reaches_the_copy(echo: EchoServer, runtime: Any) -> None:
    before = len(echo.copy_requests())
    answer = runtime.converse(
        modelId=echo.model,
        messages=_user({"text": "What do you know about project zephyr?"}),
        guardrailConfig={"guardrailIdentifier": echo.guardrail_id, "guardrailVersion": "DRAFT"},
    )
    assert answer["stopReason"] == "guardrail_intervened"
    assert answer["output"]["message"]["content"] == [{"text": BLOCKED_INPUT}]
    assert "trace" not in answer  # trace disabled by default
    stream = runtime.converse_stream(
        modelId=echo.model,
        messages=_user({"text": "My SSN is 536-22-8726"}),
        guardrailConfig={
            "guardrailIdentifier": echo.guardrail_id,
            "guardrailVersion": "DRAFT",
            "trace": "enabled",
        },
    )
    events = list(stream["stream"])
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)
    assert text == BLOCKED_INPUT
    assert [e["messageStop"]["stopReason"] for e in events if "messageStop" in e] == ["guardrail_intervened"]
    metadata = next(e["metadata"] for e in events if "metadata" in e)
    assert (
        "sensitiveInformationPolicy" in metadata["trace"]["guardrail"]["inputAssessment"][echo.guardrail_id]
    )
    invoke = runtime.invoke_model(
        modelId=echo.model,
        body=json.dumps({"prompt": "Which stocks should I buy?", "max_gen_len": 8}),
        guardrailIdentifier=echo.guardrail_id,
        guardrailVersion="DRAFT",
    )
    body = json.loads(invoke["body"].read())
    assert body["generation"] == BLOCKED_INPUT and body["amazon-bedrock-guardrailAction"] == "INTERVENED"
    assert len(echo.copy_requests()) == before  # none of the three reached the copy
    metrics = api.get(f"{echo.url}/metrics").text
    assert 'outcrop_guardrail_interventions_total{action="BLOCKED",guardrail="' in metrics
    assert 'policy="topicPolicy"' in metrics and 'policy="wordPolicy"' in metrics


def test_converse_stream_sync_masks_streamed_output_and_async_passes_it_through(
    echo: EchoServer, runtime: Any
) -> None:
    def run(mode: str) -> tuple[str, list[dict[str, Any]]]:
        stream = runtime.converse_stream(
            modelId=echo.model,
            messages=_user(
                {"guardContent": {"text": {"text": "Hello. "}}}, {"text": f"Reach me at {EMAIL} now"}
            ),
            guardrailConfig={
                "guardrailIdentifier": echo.guardrail_id,
                "guardrailVersion": "DRAFT",
                "trace": "enabled",
                "streamProcessingMode": mode,
            },
        )
        events = list(stream["stream"])
        return "".join(
            e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e
        ), events

    text, events = run("sync")
    assert text == "Hello. Reach me at {EMAIL} now"
    assert [e["messageStop"]["stopReason"] for e in events if "messageStop" in e] == ["guardrail_intervened"]
    metadata = next(e["metadata"] for e in events if "metadata" in e)
    check_event(runtime, "ConverseStreamMetadataEvent", metadata)
    assert metadata["trace"]["guardrail"]["outputAssessments"][echo.guardrail_id]

    text, events = run("async")
    assert text == f"Hello. Reach me at {EMAIL} now"  # sent as it came; the verdict follows
    assert [e["messageStop"]["stopReason"] for e in events if "messageStop" in e] == ["guardrail_intervened"]


def test_tool_calls_pass_through_a_guardrail_in_converse_and_converse_stream(
    echo: EchoServer, runtime: Any
) -> None:
    tool_config = {
        "tools": [
            {
                "toolSpec": {
                    "name": "lookup_order",
                    "inputSchema": {
                        "json": {
                            "type": "object",
                            "properties": {"id": {"type": "string"}},
                            "required": ["id"],
                        }
                    },
                }
            }
        ],
        "toolChoice": {"any": {}},
    }
    guardrail = {"guardrailIdentifier": echo.guardrail_id, "guardrailVersion": "DRAFT"}
    messages = _user({"text": "Where is my order?"})
    answer = runtime.converse(
        modelId=echo.model, messages=messages, toolConfig=tool_config, guardrailConfig=guardrail
    )
    assert answer["stopReason"] == "tool_use"
    uses = [b["toolUse"] for b in answer["output"]["message"]["content"] if "toolUse" in b]
    assert [u["name"] for u in uses] == ["lookup_order"] and isinstance(uses[0]["input"]["id"], str)

    events = list(
        runtime.converse_stream(
            modelId=echo.model,
            messages=messages,
            toolConfig=tool_config,
            guardrailConfig={**guardrail, "streamProcessingMode": "sync"},
        )["stream"]
    )
    starts = [e["contentBlockStart"]["start"]["toolUse"] for e in events if "contentBlockStart" in e]
    assert [s["name"] for s in starts] == ["lookup_order"]
    arguments = "".join(
        e["contentBlockDelta"]["delta"]["toolUse"]["input"]
        for e in events
        if "toolUse" in e.get("contentBlockDelta", {}).get("delta", {})
    )
    assert isinstance(json.loads(arguments)["id"], str)
    assert [e["messageStop"]["stopReason"] for e in events if "messageStop" in e] == ["tool_use"]


def test_converse_without_findings_is_unchanged(echo: EchoServer, runtime: Any) -> None:
    answer = runtime.converse(
        modelId=echo.model,
        messages=_user({"text": "hello there"}),
        guardrailConfig={
            "guardrailIdentifier": echo.guardrail_id,
            "guardrailVersion": "DRAFT",
            "trace": "enabled",
        },
    )
    assert answer["output"]["message"]["content"] == [{"text": "hello there"}]
    assert answer["stopReason"] != "guardrail_intervened"
    assert "actionReason" not in answer["trace"]["guardrail"]


def test_a_guardrail_config_naming_nothing_real_is_a_clear_error(echo: EchoServer, runtime: Any) -> None:
    with pytest.raises(runtime.exceptions.ResourceNotFoundException):
        runtime.converse(
            modelId=echo.model,
            messages=_user({"text": "hi"}),
            guardrailConfig={"guardrailIdentifier": "zzzzzzzzzzzz", "guardrailVersion": "DRAFT"},
        )
    with pytest.raises(runtime.exceptions.ResourceNotFoundException):
        runtime.converse(
            modelId=echo.model,
            messages=_user({"text": "hi"}),
            guardrailConfig={"guardrailIdentifier": echo.guardrail_id, "guardrailVersion": "42"},
        )


# -- InvokeModel -----------------------------------------------------------------------------------


def test_invoke_model_masks_input_and_output_with_trace(echo: EchoServer, runtime: Any) -> None:
    before = len(echo.copy_requests())
    tagged = (
        f"<amazon-bedrock-guardrails-guardContent_abc>Mail {EMAIL}.</amazon-bedrock-guardrails-guardContent_abc>"
        " Cc ops@example.net"
    )
    response = runtime.invoke_model(
        modelId=echo.model,
        body=json.dumps(
            {"prompt": tagged, "max_gen_len": 8, "amazon-bedrock-guardrailConfig": {"tagSuffix": "abc"}}
        ),
        guardrailIdentifier=echo.guardrail_id,
        guardrailVersion="DRAFT",
        trace="ENABLED",
    )
    body = json.loads(response["body"].read())
    sent = echo.copy_requests()[before:]
    assert sent[0]["prompt"] == "Mail {EMAIL}. Cc ops@example.net"  # tags gone, tagged part masked
    assert body["generation"] == "Mail {EMAIL}. Cc {EMAIL}"
    assert body["amazon-bedrock-guardrailAction"] == "INTERVENED"
    assert (
        "sensitiveInformationPolicy" in body["amazon-bedrock-trace"]["guardrail"]["input"][echo.guardrail_id]
    )

    stream = runtime.invoke_model_with_response_stream(
        modelId=echo.model,
        body=json.dumps({"messages": [{"role": "user", "content": f"write {EMAIL}"}], "max_tokens": 8}),
        guardrailIdentifier=echo.guardrail_id,
        guardrailVersion="DRAFT",
    )
    chunks = [json.loads(e["chunk"]["bytes"]) for e in stream["body"]]
    text = "".join(
        (c["choices"][0].get("delta") or {}).get("content") or "" for c in chunks if c.get("choices")
    )
    assert text == "write {EMAIL}"
    assert chunks[-1]["amazon-bedrock-guardrailAction"] == "INTERVENED"


def test_invoke_model_guardrail_header_errors(echo: EchoServer, runtime: Any) -> None:
    with pytest.raises(runtime.exceptions.ValidationException) as info:
        runtime.invoke_model(
            modelId=echo.model,
            body=json.dumps({"prompt": "hi", "amazon-bedrock-guardrailConfig": {"tagSuffix": "x"}}),
        )
    assert "X-Amzn-Bedrock-GuardrailIdentifier" in info.value.response["Error"]["Message"]


def test_invocation_logs_name_the_guardrail(echo: EchoServer, runtime: Any) -> None:
    bedrock = boto3_client("bedrock", echo.url)
    bedrock.put_model_invocation_logging_configuration(
        loggingConfig={"s3Config": {"bucketName": "guard-logs"}, "textDataDeliveryEnabled": True}
    )
    try:
        response = runtime.converse(
            modelId=echo.model,
            messages=_user({"text": f"note {EMAIL}"}),
            guardrailConfig={"guardrailIdentifier": echo.guardrail_id, "guardrailVersion": "DRAFT"},
        )
        request_id = response["ResponseMetadata"]["RequestId"]
        root = echo.server.data_dir / "invocation-logs" / "guard-logs"
        records = [json.loads(line) for f in root.rglob("*.jsonl") for line in f.read_text().splitlines()]
        (record,) = [r for r in records if r["requestId"] == request_id]
        assert record["guardrail"]["guardrailId"] == echo.guardrail_id
        assert record["guardrail"]["input"]["interventions"] == [
            {"policy": "sensitiveInformationPolicy", "kind": "EMAIL", "action": "ANONYMIZED"}
        ]
    finally:
        bedrock.delete_model_invocation_logging_configuration()


# -- LangChain -------------------------------------------------------------------------------------


def test_langchain_chat_bedrock_converse_with_guardrail_config(echo: EchoServer) -> None:
    from langchain_aws import ChatBedrockConverse

    llm = ChatBedrockConverse(
        model=echo.model,
        client=boto3_client("bedrock-runtime", echo.url),
        provider="meta",
        guardrail_config={
            "guardrailIdentifier": echo.guardrail_id,
            "guardrailVersion": "DRAFT",
            "trace": "enabled",
        },
    )
    masked = llm.invoke(f"please mail {EMAIL}")
    assert masked.content == "please mail {EMAIL}"
    assert masked.response_metadata["stopReason"] == "guardrail_intervened"
    blocked = llm.invoke("is project zephyr on track?")
    assert blocked.content == BLOCKED_INPUT
    streamed = "".join(chunk.text for chunk in llm.stream(f"write {EMAIL}"))
    assert "{EMAIL}" in streamed and EMAIL not in streamed


# -- content filters (a safety model) --------------------------------------------------------------


def test_content_filters_ask_the_named_safety_model_and_fail_closed_on_an_unreadable_answer(
    echo: EchoServer, runtime: Any
) -> None:
    # The echo copy stands in for a Llama Guard model: it answers what it is sent, so the text decides.
    bedrock = boto3_client("bedrock", echo.url)
    gid = bedrock.create_guardrail(
        name=f"content-{uuid.uuid4().hex[:6]}",
        blockedInputMessaging=BLOCKED_INPUT,
        blockedOutputsMessaging=BLOCKED_OUTPUT,
        tags=[{"key": "outcrop:safety-model", "value": echo.model}],
        contentPolicyConfig={
            "filtersConfig": [
                {"type": "HATE", "inputStrength": "HIGH", "outputStrength": "HIGH"},
                {"type": "PROMPT_ATTACK", "inputStrength": "HIGH", "outputStrength": "NONE"},
            ]
        },
    )["guardrailId"]

    def apply(text: str) -> dict[str, Any]:
        out: dict[str, Any] = runtime.apply_guardrail(
            guardrailIdentifier=gid,
            guardrailVersion="DRAFT",
            source="INPUT",
            content=[{"text": {"text": text}}],
        )
        return out

    hateful = apply("unsafe\nS10")
    assert hateful["action"] == "GUARDRAIL_INTERVENED" and hateful["outputs"] == [{"text": BLOCKED_INPUT}]
    assert hateful["assessments"][0]["contentPolicy"]["filters"] == [
        {
            "type": "HATE",
            "confidence": "HIGH",
            "filterStrength": "HIGH",
            "action": "BLOCKED",
            "detected": True,
        }
    ]
    assert apply("safe")["action"] == "NONE"
    with pytest.raises(runtime.exceptions.ClientError) as info:
        apply("hello")
    assert info.value.response["Error"]["Code"] == "ModelErrorException"
    assert "Llama Guard" in info.value.response["Error"]["Message"]


# -- authorization ---------------------------------------------------------------------------------


def test_guardrail_operations_and_their_use_are_authorized_by_policy(echo: EchoServer) -> None:
    from tests.auth.test_auth_e2e import client_as

    other = _guardrail(boto3_client("bedrock", echo.url))["guardrailId"]
    policy = {
        "Statement": [
            {"Effect": "Allow", "Action": ["bedrock:Converse", "bedrock:GetGuardrail"], "Resource": ["*"]},
            {"Effect": "Allow", "Action": ["bedrock:ApplyGuardrail"], "Resource": [echo.guardrail_arn]},
        ]
    }
    key = api.post(
        f"{echo.url}/outcrop/keys", json={"name": f"app-{uuid.uuid4().hex[:6]}", "policy": policy}
    ).json()
    bedrock = client_as("bedrock", echo.url, key["accessKeyId"], key["secretAccessKey"])
    runtime = client_as("bedrock-runtime", echo.url, key["accessKeyId"], key["secretAccessKey"])
    assert bedrock.get_guardrail(guardrailIdentifier=echo.guardrail_id)["guardrailId"] == echo.guardrail_id
    with pytest.raises(bedrock.exceptions.AccessDeniedException, match="bedrock:DeleteGuardrail"):
        bedrock.delete_guardrail(guardrailIdentifier=echo.guardrail_id)
    with pytest.raises(bedrock.exceptions.AccessDeniedException, match="bedrock:CreateGuardrail"):
        bedrock.create_guardrail(name="nope", blockedInputMessaging="x", blockedOutputsMessaging="y")
    ok = runtime.converse(
        modelId=echo.model,
        messages=_user({"text": "hi"}),
        guardrailConfig={"guardrailIdentifier": echo.guardrail_id, "guardrailVersion": "DRAFT"},
    )
    assert ok["output"]["message"]["content"] == [{"text": "hi"}]
    with pytest.raises(
        runtime.exceptions.AccessDeniedException, match=f"bedrock:ApplyGuardrail on resource: .*{other}"
    ):
        runtime.converse(
            modelId=echo.model,
            messages=_user({"text": "hi"}),
            guardrailConfig={"guardrailIdentifier": other, "guardrailVersion": "DRAFT"},
        )
    with pytest.raises(runtime.exceptions.AccessDeniedException, match="bedrock:ApplyGuardrail"):
        runtime.apply_guardrail(
            guardrailIdentifier=other,
            guardrailVersion="DRAFT",
            source="INPUT",
            content=[{"text": {"text": "x"}}],
        )


# -- batch ------------------------------------------------------------------------------------------


def test_converse_batch_records_may_name_a_guardrail(echo: EchoServer) -> None:
    root = echo.server.import_root / f"batch-{uuid.uuid4().hex[:6]}"
    root.mkdir()
    config = {"guardrailIdentifier": echo.guardrail_id, "guardrailVersion": "DRAFT"}
    records = [
        {
            "recordId": "masked",
            "modelInput": {"messages": _user({"text": f"mail {EMAIL}"}), "guardrailConfig": config},
        },
        {
            "recordId": "blocked",
            "modelInput": {"messages": _user({"text": "ssn 536-22-8726"}), "guardrailConfig": config},
        },
        {"recordId": "plain", "modelInput": {"messages": _user({"text": f"mail {EMAIL}"})}},
    ]
    (root / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    bedrock = boto3_client("bedrock", echo.url)
    arn = bedrock.create_model_invocation_job(
        jobName=f"guarded-{uuid.uuid4().hex[:6]}",
        roleArn="arn:aws:iam::123456789012:role/Batch",
        modelId=echo.model,
        modelInvocationType="Converse",
        inputDataConfig={"s3InputDataConfig": {"s3Uri": str(root / "in.jsonl")}},
        outputDataConfig={"s3OutputDataConfig": {"s3Uri": str(root / "out")}},
    )["jobArn"]
    deadline = time.monotonic() + 120
    while bedrock.get_model_invocation_job(jobIdentifier=arn)["status"] not in (
        "Completed",
        "Failed",
        "PartiallyCompleted",
    ):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    out = root / "out" / arn.rsplit("/", 1)[-1] / "in.jsonl.out"
    lines = {line["recordId"]: line for line in map(json.loads, out.read_text().splitlines())}
    masked = lines["masked"]["modelOutput"]
    assert masked["output"]["message"]["content"] == [{"text": "mail {EMAIL}"}]
    assert masked["stopReason"] == "guardrail_intervened"
    assert lines["blocked"]["modelOutput"]["output"]["message"]["content"] == [{"text": BLOCKED_INPUT}]
    assert lines["plain"]["modelOutput"]["output"]["message"]["content"] == [{"text": f"mail {EMAIL}"}]


def test_langchain_chat_bedrock_with_guardrails(echo: EchoServer) -> None:
    from langchain_aws import ChatBedrock

    llm = ChatBedrock(
        model_id=echo.model,
        client=boto3_client("bedrock-runtime", echo.url),
        provider="meta",
        guardrails={"guardrailIdentifier": echo.guardrail_id, "guardrailVersion": "DRAFT", "trace": True},
        model_kwargs={"max_gen_len": 64},
    )
    blocked = llm.invoke("tell me about project zephyr")
    assert blocked.content == BLOCKED_INPUT
    masked = llm.invoke(f"mail {EMAIL}")
    assert "{EMAIL}" in masked.content and EMAIL not in masked.content
