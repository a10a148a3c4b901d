"""boto3 ``bedrock-agent-runtime`` RetrieveAndGenerate and RetrieveAndGenerateStream (thin: parse, authorize,
retrieve, call the model as Converse does, translate).

Paths and shapes are botocore's ``bedrock-agent-runtime`` 2023-07-26 service model: ``POST
/retrieveAndGenerate`` answers JSON; ``POST /retrieveAndGenerateStream`` answers an AWS event stream
(``output`` events with the answer's text as it is generated, a ``citation`` event as each cited part
completes) and the session id in the ``x-amzn-bedrock-knowledge-base-session-id`` header. The work is in
:mod:`outcrop.knowledge.rag` (prompt, copy request, citations) and :mod:`outcrop.knowledge.rag_sessions`.

The knowledge bases come from the knowledge service at ``services.extra["knowledge"]`` (the
:class:`outcrop.knowledge.rag.Retriever` seam). Authorization: both operations are the action
``bedrock:RetrieveAndGenerate`` (as Bedrock documents for the stream too) on the knowledge base's ARN,
checked by the guard; the caller must also be allowed ``bedrock:InvokeModel`` on the model that
generates, so a knowledge base is never a side door to a model the caller may not invoke.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from outcrop.api.bedrock.errors import bedrock_error
from outcrop.api.deps import Services, get_services, parse_body
from outcrop.api.inference import cold_start_policy, invocation
from outcrop.api.runtime import eventstream
from outcrop.auth.guard import AuthContext, Guard, principal_name
from outcrop.config import OutcropConfig
from outcrop.errors import AccessDeniedError, InvalidRequestError, NotFoundError, OutcropError
from outcrop.guardrails.evaluate import CompiledGuardrail
from outcrop.guardrails.service import GuardrailService
from outcrop.knowledge import rag
from outcrop.knowledge.rag_sessions import RagSession, RagSessions, Turn

router = APIRouter(tags=["bedrock-agent-runtime knowledge bases"])

ACTION = "bedrock:RetrieveAndGenerate"
APPLY_GUARDRAIL = "bedrock:ApplyGuardrail"  # using a guardrail on a call needs it, as in Bedrock
SESSION_HEADER = "x-amzn-bedrock-knowledge-base-session-id"
# The error members of RetrieveAndGenerateStreamResponseOutput in botocore's bedrock-agent-runtime
# 2023-07-26 service model; boto3 raises EventStreamError with the member as its code.
STREAM_ERROR_MEMBERS = frozenset(
    {
        "accessDeniedException",
        "badGatewayException",
        "conflictException",
        "dependencyFailedException",
        "internalServerException",
        "resourceNotFoundException",
        "serviceQuotaExceededException",
        "throttlingException",
        "validationException",
    }
)
# The member for an error the shape has none of its own for (a model copy that failed or timed out):
# "There was an issue with a dependency due to a server issue".
FALLBACK_STREAM_ERROR_MEMBER = "badGatewayException"


def stream_error(exc: OutcropError, model: str) -> bytes:
    """An error after the stream began, as the exception frame boto3 raises while iterating."""
    name, status = bedrock_error(exc)
    member = name[:1].lower() + name[1:]
    if member in STREAM_ERROR_MEMBERS:
        return eventstream.exception(member, exc.message)
    return eventstream.exception(
        FALLBACK_STREAM_ERROR_MEMBER,
        f"{exc.message} (the model answered {status} {name})",
        resourceName=model,
    )


def retriever(services: Services) -> rag.Retriever:
    """The knowledge service, or ResourceNotFoundException saying this server has none."""
    knowledge: rag.Retriever | None = services.extra.get("knowledge")
    if knowledge is None:
        raise NotFoundError(
            "Knowledge-base service",
            "knowledge",
            "This Outcrop server was built without knowledge bases, so it holds none to retrieve from. Run "
            "an Outcrop version with knowledge bases (bedrock-agent CreateKnowledgeBase) and send the "
            "request there.",
        )
    return knowledge


def sessions(services: Services) -> RagSessions:
    store: RagSessions = services.extra.setdefault("rag_sessions", RagSessions(services.db))
    return store


async def _kb_resource(request: Request, config: OutcropConfig) -> str:
    """The knowledge base's ARN for the policy check (``.../knowledge-base/unknown`` when the body names
    none: the route then answers what is wrong with it, if the caller may ask)."""
    base = f"arn:aws:bedrock:{config.aws.region}:{config.aws.account_id}:knowledge-base/"
    try:
        body = json.loads(await request.body() or b"{}")
        kb_id = body["retrieveAndGenerateConfiguration"]["knowledgeBaseConfiguration"]["knowledgeBaseId"]
    except (ValueError, KeyError, TypeError, RecursionError):
        return base + "unknown"
    return (
        base + kb_id if isinstance(kb_id, str) and kb_id.isalnum() and len(kb_id) <= 10 else base + "unknown"
    )


def _action(_request: Request) -> str:
    return ACTION


async def text_model(services: Services, request: Request, model_arn: str) -> Any:
    """The imported text model ``modelArn`` names, once the caller may invoke it."""
    where = "retrieveAndGenerateConfiguration.knowledgeBaseConfiguration.modelArn"
    try:
        model = await services.serving.resolve(model_arn)
    except NotFoundError:
        raise NotFoundError(
            "Model",
            model_arn,
            f"RetrieveAndGenerate generates with an imported text model: set {where} to one "
            "(bedrock ListImportedModels shows them).",
        ) from None
    arn = services.registry.model_arn(model)
    auth: AuthContext | None = getattr(request.state, "auth", None)
    if auth is not None and not Guard.allows(request, "bedrock:InvokeModel", arn):
        raise AccessDeniedError(
            f"User: {auth.principal.arn} is not authorized to perform: bedrock:InvokeModel on resource: {arn} "
            "(the model RetrieveAndGenerate generates with). Use a key whose policy allows it."
        )
    if getattr(model, "is_embedding", False):
        raise InvalidRequestError(
            f"{where} names '{model.name}', an embedding model; RetrieveAndGenerate generates its answer with a "
            "text-generation model. Set modelArn to an imported text model (the knowledge base's own "
            "embedding model is set on the knowledge base, not here).",
            param=where,
        )
    return model


@dataclass
class RagGuard:
    """generationConfiguration.guardrailConfiguration: the guardrail screens the question (before anything
    is retrieved) and the answer, as Bedrock applies it to RetrieveAndGenerate. A masked answer keeps its
    citations (each part is screened and masked on its own); a blocked one cites nothing."""

    service: GuardrailService
    compiled: CompiledGuardrail
    intervened: bool = False

    @classmethod
    def of(cls, request: Request, services: Services, kb: rag.KnowledgeBaseConfiguration) -> RagGuard | None:
        config = kb.generationConfiguration.guardrailConfiguration if kb.generationConfiguration else None
        if config is None:
            return None
        service: GuardrailService = services.extra["guardrails"]
        compiled = service.compiled(config.guardrailId, config.guardrailVersion)
        if not Guard.allows(request, APPLY_GUARDRAIL, compiled.arn):
            auth: AuthContext | None = getattr(request.state, "auth", None)
            who = auth.principal.arn if auth is not None else "anonymous"
            raise AccessDeniedError(
                f"User: {who} is not authorized to perform: {APPLY_GUARDRAIL} on resource: {compiled.arn} (the "
                "guardrail in generationConfiguration.guardrailConfiguration)."
            )
        return cls(service, compiled)

    @property
    def action(self) -> str:
        """The response's guardrailAction (and the stream's guardrail event)."""
        return "INTERVENED" if self.intervened else "NONE"

    async def screen_question(self, text: str) -> tuple[str, str | None]:
        """``(the question to use, None)``, masked if need be, or ``(text, the blocked message)``."""
        outcome = await self.service.apply(self.compiled, [text], "INPUT")
        self.intervened |= outcome.intervened
        if outcome.blocked:
            return text, outcome.outputs[0]
        return (outcome.outputs[0] if outcome.intervened else text), None

    async def screen_answer(self, cited: rag.CitedAnswer) -> rag.CitedAnswer:
        parts = cited.parts()
        if not parts:
            return cited
        outcome = await self.service.apply(self.compiled, parts, "OUTPUT")
        if not outcome.intervened:
            return cited
        self.intervened = True
        if outcome.blocked:
            return rag.CitedAnswer.uncited(outcome.outputs[0])
        return cited.with_parts(outcome.outputs)


@dataclass
class Run:
    """One RetrieveAndGenerate call, prepared: what was asked, what was found, and the copy's request."""

    request: rag.RetrieveAndGenerateRequest
    model: Any
    session: RagSession
    question: str  # as the guardrail let it through (masked), else as sent
    guard: RagGuard | None = None
    blocked: str | None = None  # the guardrail blocked the question: this is the answer, nothing is generated
    results: list[dict[str, Any]] = field(default_factory=list)
    path: str = ""
    body: dict[str, Any] = field(default_factory=dict)

    def log_input(self) -> dict[str, Any]:
        return self.request.model_dump(exclude_none=True)

    def answer(self, cited: rag.CitedAnswer) -> dict[str, Any]:
        out = {"output": {"text": cited.text}, "citations": cited.citations, "sessionId": self.session.id}
        if self.guard is not None:
            out["guardrailAction"] = self.guard.action
        return out

    async def finish(self, services: Services, cited: rag.CitedAnswer) -> rag.CitedAnswer:
        """The answer as the caller sees it (screened by the guardrail), recorded in the session."""
        if self.guard is not None:
            cited = await self.guard.screen_answer(cited)
        turn = None if self.blocked is not None else Turn(self.question, cited.text)
        await asyncio.to_thread(sessions(services).record, self.session, turn)
        return cited


async def prepare(request: Request, services: Services) -> Run:
    body = await parse_body(request, rag.RetrieveAndGenerateRequest)
    kb = body.knowledge_base()  # refuses what Outcrop does not do, with the fix
    knowledge = retriever(services)
    model = await text_model(services, request, kb.modelArn)
    session = await asyncio.to_thread(
        sessions(services).open,
        body.sessionId,
        owner=principal_name(request),
        knowledge_base_id=kb.knowledgeBaseId,
        kms_key_arn=body.sessionConfiguration.kmsKeyArn if body.sessionConfiguration else None,
    )
    run = Run(body, model, session, body.input.text, guard=RagGuard.of(request, services, kb))
    if run.guard is not None:
        run.question, run.blocked = await run.guard.screen_question(run.question)
        if run.blocked is not None:
            return run
    run.results = await rag.retrieve(knowledge, kb, run.question)
    generation = kb.generationConfiguration
    template = (
        generation.promptTemplate.textPromptTemplate if generation and generation.promptTemplate else None
    )
    prompt = rag.build_prompt(template, run.question, run.results)
    history = [(turn.input, turn.output) for turn in session.turns]
    run.path, run.body = rag.copy_request(prompt, history, generation, chat=bool(model.instruct_supported))
    return run


@router.post("/retrieveAndGenerate", summary="RetrieveAndGenerate")
async def retrieve_and_generate(request: Request, services: Services = Depends(get_services)) -> Response:
    run = await prepare(request, services)
    if run.blocked is not None:
        return JSONResponse(run.answer(await run.finish(services, rag.CitedAnswer.uncited(run.blocked))))
    # Cold start: the caller waits for the copy (bounded), since boto3's bedrock-agent-runtime client does
    # not retry ModelNotReadyException the way bedrock-runtime's does.
    async with invocation(services, request, run.model.name, "RetrieveAndGenerate") as call:
        resp = await services.serving.post(
            run.model.name, run.path, run.body, cold_start=cold_start_policy(request, bedrock=False)
        )
    cited = await run.finish(services, rag.answer(run.results, rag.generated_text(run.path, resp)))
    answer = run.answer(cited)
    call.record(resp.get("usage") or {}, run.log_input(), answer)
    return JSONResponse(answer)


@router.post("/retrieveAndGenerateStream", summary="RetrieveAndGenerateStream")
async def retrieve_and_generate_stream(
    request: Request, services: Services = Depends(get_services)
) -> Response:
    run = await prepare(request, services)
    headers = {SESSION_HEADER: run.session.id}
    if run.blocked is not None:
        cited = await run.finish(services, rag.CitedAnswer.uncited(run.blocked))
        return StreamingResponse(
            iter(_screened_events(run, cited)), media_type=eventstream.CONTENT_TYPE, headers=headers
        )
    call = invocation(services, request, run.model.name, "RetrieveAndGenerateStream")
    chunks = await call.open_stream(
        services.serving.stream(
            run.model.name, run.path, run.body, cold_start=cold_start_policy(request, bedrock=False)
        )
    )

    async def frames() -> AsyncIterator[bytes]:
        cited = rag.CitedAnswer(run.results)
        usage: dict[str, Any] = {}
        try:
            # Under a guardrail the answer is screened whole before any of it is sent (Bedrock's sync mode).
            live = run.guard is None
            async for chunk in chunks:
                if chunk.get("usage"):
                    usage = chunk["usage"]
                for event in cited.feed(rag.chunk_text(run.path, chunk)):
                    if live:
                        yield eventstream.event(*rag.stream_event(event))
            for event in cited.end():
                if live:
                    yield eventstream.event(*rag.stream_event(event))
            screened = await run.finish(services, cited)
            if not live:
                for frame in _screened_events(run, screened):
                    yield frame
            call.record(usage, run.log_input(), run.answer(screened))
        except OutcropError as exc:
            call.fail(exc)
            yield stream_error(exc, run.model.name)
        finally:
            call.close()

    return StreamingResponse(frames(), media_type=eventstream.CONTENT_TYPE, headers=headers)


def _screened_events(run: Run, cited: rag.CitedAnswer) -> list[bytes]:
    """A whole screened answer as stream frames: its text, its citations, then the guardrail's action."""
    frames = [eventstream.event("output", {"text": cited.text})] if cited.text else []
    frames += [eventstream.event(*rag.stream_event(("citation", c))) for c in cited.citations]
    if run.guard is not None:
        frames.append(eventstream.event("guardrail", {"action": run.guard.action}))
    return frames


for _route in (retrieve_and_generate, retrieve_and_generate_stream):
    setattr(_route, "outcrop_resource", _kb_resource)  # noqa: B010 - read by outcrop.auth.guard
setattr(retrieve_and_generate_stream, "outcrop_action", _action)  # noqa: B010 - read by outcrop.auth.guard
