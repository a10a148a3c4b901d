"""The guardrails facade the routes call: control plane, evaluation (ApplyGuardrail and the runtime), metrics.

Compiled guardrails are cached per (id, version) for :data:`RESOLVE_CACHE_SECONDS`, so the
runtime pays one dict lookup per request, and a change (UpdateGuardrail on the draft, a deleted
version) reaches every gateway on the same database within that time.

Content filters ask the guardrail's safety model (an imported Llama Guard-style model, named by
the ``outcrop:safety-model`` tag) through the ordinary serving path: the text goes in as a chat
turn, the model's chat template builds Llama Guard's prompt, and the answer must be Llama
Guard's ``safe`` or ``unsafe`` + a line of categories (S1..S14), which :data:`LLAMA_GUARD_CATEGORIES`
maps to Bedrock's filter types. An answer in any other form is a ModelErrorException naming the
model: a safety check that cannot be read fails closed.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Histogram

from outcrop.config import AwsIdentityConfig
from outcrop.errors import InvalidRequestError, ModelFailedError, NotFoundError
from outcrop.guardrails import detectors
from outcrop.guardrails.evaluate import CompiledGuardrail, ContentFinding, Outcome, Source
from outcrop.guardrails.policy import (
    CreateGuardrailRequest,
    GuardrailConfigRequest,
    parse_guardrail_config,
    safety_model_from_tags,
)
from outcrop.guardrails.store import DRAFT, GuardrailRow, GuardrailStore
from outcrop.store.db import Database

# Why 1 s: a runtime request must not pay a database read, and an edit of the draft or a deleted
# version should reach every gateway sharing the database about as fast as a person can retry.
RESOLVE_CACHE_SECONDS = 1.0
# Llama Guard answers 'safe' or 'unsafe\nS1,S10': a few tokens.
SAFETY_MAX_TOKENS = 16

ID_RE = re.compile(r"[a-z0-9]+")
ARN_RE = re.compile(r"arn:aws(-[^:]+)?:bedrock:[a-z0-9-]{1,20}:[0-9]{12}:guardrail/(?P<id>[a-z0-9]+)")
VERSION_RE = re.compile(r"[1-9][0-9]{0,7}|DRAFT")

# Llama Guard 3's hazard categories -> Bedrock content filter types. Categories with no Bedrock
# counterpart (S6 specialized advice, S7 privacy, S8 intellectual property) are not mapped.
LLAMA_GUARD_CATEGORIES = {
    "S1": "VIOLENCE",  # violent crimes
    "S2": "MISCONDUCT",  # non-violent crimes
    "S3": "SEXUAL",  # sex-related crimes
    "S4": "SEXUAL",  # child sexual exploitation
    "S5": "INSULTS",  # defamation
    "S9": "VIOLENCE",  # indiscriminate weapons
    "S10": "HATE",  # hate
    "S11": "VIOLENCE",  # suicide and self-harm
    "S12": "SEXUAL",  # sexual content
    "S13": "MISCONDUCT",  # elections
    "S14": "PROMPT_ATTACK",  # code interpreter abuse
}


def guardrail_arn(identity: AwsIdentityConfig, guardrail_id: str) -> str:
    return f"arn:aws:bedrock:{identity.region}:{identity.account_id}:guardrail/{guardrail_id}"


def parse_identifier(identifier: str, param: str = "guardrailIdentifier") -> str:
    """A guardrail id from an id or ARN (a name is accepted too: looked up by the store)."""
    match = ARN_RE.fullmatch(identifier)
    if match is not None:
        return match.group("id")
    if identifier.startswith("arn:"):
        raise InvalidRequestError(
            f"1 validation error detected: Value {identifier!r} at '{param}' is not a guardrail ARN "
            "(arn:aws:bedrock:<region>:<account>:guardrail/<id>).",
            param=param,
        )
    if not identifier or len(identifier) > 2048 or not re.fullmatch(r"[0-9a-zA-Z-_]+", identifier):
        raise InvalidRequestError(
            f"1 validation error detected: Value {identifier!r} at '{param}' failed to satisfy constraint: "
            "Member must be a guardrail id (lowercase letters and digits) or ARN.",
            param=param,
        )
    return identifier


def check_version(version: str | None, param: str = "guardrailVersion", *, numbered: bool = False) -> str:
    if version is None or not VERSION_RE.fullmatch(version) or (numbered and version == DRAFT):
        allowed = "a version number (1, 2, ...)" if numbered else "DRAFT or a version number (1, 2, ...)"
        raise InvalidRequestError(
            f"1 validation error detected: Value {version!r} at '{param}' failed to satisfy constraint: "
            f"Member must be {allowed}.",
            param=param,
        )
    return version


class GuardrailMetrics:
    """Guardrail metrics in the gateway's /metrics (one registry per app)."""

    def __init__(self, registry: Any) -> None:
        self.evaluations = Counter(
            "outcrop_guardrail_evaluations",
            "Guardrail evaluations by guardrail, source (INPUT/OUTPUT) and action.",
            ["guardrail", "source", "action"],
            registry=registry,
        )
        self.interventions = Counter(
            "outcrop_guardrail_interventions",
            "Guardrail findings that acted (blocked or anonymized), by guardrail, policy, kind and action.",
            ["guardrail", "policy", "kind", "action"],
            registry=registry,
        )
        self.latency = Histogram(
            "outcrop_guardrail_latency_seconds",
            "Time to evaluate a guardrail (safety-model calls included).",
            ["guardrail"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5),
            registry=registry,
        )


@dataclass
class _Cached:
    compiled: CompiledGuardrail
    at: float


class GuardrailService:
    def __init__(
        self, identity: AwsIdentityConfig, db: Database, registry: Any, serving: Any, metrics_registry: Any
    ):
        self.identity = identity
        self.store = GuardrailStore(db)
        self.registry = registry  # outcrop.registry.service.Registry: does the safety model exist?
        self.serving = serving  # outcrop.serving.service.Serving: calls the safety model
        self.metrics = GuardrailMetrics(metrics_registry)
        self._cache: dict[tuple[str, str], _Cached] = {}

    def start(self) -> None:
        """Build the PII recognizers in the background, so the first guarded request does not wait."""
        threading.Thread(target=detectors.warm, name="outcrop-guardrails-warm", daemon=True).start()

    def arn(self, guardrail_id: str) -> str:
        return guardrail_arn(self.identity, guardrail_id)

    def resolve_id(self, identifier: str, param: str = "guardrailIdentifier") -> str:
        key = parse_identifier(identifier, param)
        found = self.store.find_id(key)
        if found is None:
            raise NotFoundError("Guardrail", identifier, "List guardrails with ListGuardrails.")
        return found

    # -- control plane ---------------------------------------------------------------------------

    def _safety_model(self, name: str | None) -> str | None:
        if name is None:
            return None
        try:
            return str(self.registry.get_model(name).name)
        except (NotFoundError, InvalidRequestError):
            raise InvalidRequestError(
                f"1 validation error detected: the safety model '{name}' named by the guardrail's "
                "'outcrop:safety-model' tag is not an imported model. Import it first (a Llama Guard-style "
                "model), or fix the tag.",
                param="tags",
            ) from None

    def create(self, body: CreateGuardrailRequest) -> GuardrailRow:
        tags = [t.model_dump() for t in body.tags]
        spec = parse_guardrail_config(body, self._safety_model(safety_model_from_tags(tags)))
        return self.store.create(spec, tags, body.clientRequestToken)

    def update(self, identifier: str, body: GuardrailConfigRequest) -> GuardrailRow:
        guardrail_id = self.resolve_id(identifier)
        current = self.store.get(guardrail_id)
        spec = parse_guardrail_config(body, self._safety_model(safety_model_from_tags(current.tags)))
        row = self.store.update(guardrail_id, spec)
        self._cache.pop((guardrail_id, DRAFT), None)
        return row

    def create_version(self, identifier: str, description: str | None, token: str | None) -> tuple[str, str]:
        guardrail_id = self.resolve_id(identifier)
        return guardrail_id, self.store.create_version(guardrail_id, description, token)

    def delete(self, identifier: str, version: str | None) -> None:
        guardrail_id = self.resolve_id(identifier)
        if version is not None:
            check_version(version, numbered=True)
        self.store.delete(guardrail_id, version)
        for key in [k for k in self._cache if k[0] == guardrail_id]:
            self._cache.pop(key, None)

    def get(self, identifier: str, version: str | None) -> GuardrailRow:
        guardrail_id = self.resolve_id(identifier)
        return self.store.get(guardrail_id, check_version(version or DRAFT))

    # -- evaluation ------------------------------------------------------------------------------

    def compiled(self, identifier: str, version: str | None) -> CompiledGuardrail:
        """The guardrail version a runtime request names, compiled (cached briefly; see the module doc)."""
        key = parse_identifier(identifier)
        version = check_version(version)
        now = time.monotonic()
        cached = self._cache.get((key, version))
        if cached is not None and now - cached.at < RESOLVE_CACHE_SECONDS:
            return cached.compiled
        guardrail_id = self.resolve_id(identifier)
        row = self.store.get(guardrail_id, version)
        previous = self._cache.get((guardrail_id, version))
        if previous is not None and previous.compiled.spec == row.spec:
            compiled = previous.compiled
        else:
            compiled = CompiledGuardrail(guardrail_id, version, self.arn(guardrail_id), row.spec)
        entry = _Cached(compiled, now)
        self._cache[(guardrail_id, version)] = entry
        self._cache[(key, version)] = entry
        return compiled

    async def _content_findings(
        self, compiled: CompiledGuardrail, texts: list[str], source: Source
    ) -> list[ContentFinding]:
        if not compiled.content_filters_for(source) or not compiled.spec.safety_model:
            return []
        from outcrop.serving.router import ColdStartPolicy

        model = compiled.spec.safety_model
        text = "\n".join(texts)
        if source == "INPUT":
            messages = [{"role": "user", "content": text}]
        else:  # Llama Guard judges the last assistant turn
            messages = [{"role": "user", "content": "(conversation)"}, {"role": "assistant", "content": text}]
        answer = await self.serving.post(
            model,
            "/v1/chat/completions",
            {"messages": messages, "max_tokens": SAFETY_MAX_TOKENS, "temperature": 0},
            cold_start=ColdStartPolicy(wait=True, max_wait_seconds=120.0),
        )
        reply = str(((answer.get("choices") or [{}])[0].get("message") or {}).get("content") or "").strip()
        return parse_llama_guard(reply, model)

    async def apply(
        self,
        compiled: CompiledGuardrail,
        texts: list[str],
        source: Source,
        *,
        full: bool = False,
    ) -> Outcome:
        started = time.perf_counter()
        findings = await self._content_findings(compiled, texts, source)
        outcome = compiled.assess(texts, source, full=full, content_findings=findings)
        elapsed = time.perf_counter() - started
        outcome.latency_ms = int(elapsed * 1000)
        outcome.assessment["invocationMetrics"]["guardrailProcessingLatency"] = outcome.latency_ms
        self.metrics.latency.labels(compiled.id).observe(elapsed)
        self.metrics.evaluations.labels(compiled.id, source, outcome.action).inc()
        for policy, kind, action in outcome.interventions:
            self.metrics.interventions.labels(compiled.id, policy, kind, action).inc()
        return outcome


def parse_llama_guard(reply: str, model: str) -> list[ContentFinding]:
    """Llama Guard's verdict as content findings; anything else fails closed (ModelErrorException)."""
    lines = [line.strip() for line in reply.splitlines() if line.strip()]
    if lines and lines[0].lower() == "safe":
        return []
    if lines and lines[0].lower() == "unsafe":
        categories = re.findall(r"S\d+", lines[1]) if len(lines) > 1 else []
        types = sorted({LLAMA_GUARD_CATEGORIES[c] for c in categories if c in LLAMA_GUARD_CATEGORIES})
        if not types:  # unsafe, but in a category Bedrock has no filter for: misconduct is closest
            types = ["MISCONDUCT"]
        return [ContentFinding(t) for t in types]
    raise ModelFailedError(
        f"The guardrail's safety model '{model}' answered {reply[:60]!r}, not Llama Guard's 'safe' or "
        "'unsafe' + categories, so the content filters cannot be applied. Name a Llama Guard-style model in "
        "the 'outcrop:safety-model' tag.",
        model_id=model,
    )
