"""CreateGuardrail / UpdateGuardrail bodies (botocore's bedrock 2023-04-20 shapes), checked and normalised.

:func:`parse_guardrail_config` turns a request body into a :class:`GuardrailSpec`: the policies in
GetGuardrail's output shape (``topicPolicy``, ``contentPolicy``, ``wordPolicy``,
``sensitiveInformationPolicy``) with every default filled in, so what is stored is exactly what
GetGuardrail answers and what the runtime evaluates. Everything is checked before anything is
stored: an invalid regex, an entity type without a detector, too many words, content filters
without a safety model, contextual grounding: a ValidationException naming the field and the
fix, and nothing half-created.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

import regex
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from outcrop.errors import InvalidRequestError
from outcrop.guardrails.detectors import SUPPORTED_PII_TYPES

# Bedrock's own limits (service model and the Bedrock quotas page).
MAX_WORDS = 10_000  # GuardrailWordsConfig max
MAX_REGEXES = 30  # GuardrailRegexesConfig max
MAX_TOPICS = 30  # GuardrailTopicsConfig max
MAX_TOPIC_EXAMPLES = 5
MAX_TOPIC_EXAMPLE_CHARS = 100

# The tag that names the imported model backing content filters (Llama Guard style). A tag, because
# botocore validates request parameters client-side and has no member for it anywhere else.
SAFETY_MODEL_TAG = "outcrop:safety-model"

NAME_RE = re.compile(r"[0-9a-zA-Z-_]+")
TOPIC_NAME_RE = re.compile(r"[0-9a-zA-Z-_ !?.]+")

Action2 = Literal["BLOCK", "NONE"]
Action3 = Literal["BLOCK", "ANONYMIZE", "NONE"]
Strength = Literal["NONE", "LOW", "MEDIUM", "HIGH"]


class Wire(BaseModel):
    # Unknown members are ignored, as AWS services do, so newer SDKs keep working.
    model_config = ConfigDict(extra="ignore")


class TopicConfig(Wire):
    name: str = Field(min_length=1, max_length=100, pattern=TOPIC_NAME_RE.pattern)
    definition: str = Field(min_length=1, max_length=200)
    examples: list[str] = Field(default_factory=list, max_length=MAX_TOPIC_EXAMPLES)
    type: Literal["DENY"]
    inputAction: Action2 = "BLOCK"
    outputAction: Action2 = "BLOCK"
    inputEnabled: bool = True
    outputEnabled: bool = True


class Tier(Wire):
    tierName: Literal["CLASSIC", "STANDARD"]


class TopicPolicyConfig(Wire):
    topicsConfig: list[TopicConfig] = Field(min_length=1, max_length=MAX_TOPICS)
    tierConfig: Tier | None = None


class ContentFilterConfig(Wire):
    type: Literal["SEXUAL", "VIOLENCE", "HATE", "INSULTS", "MISCONDUCT", "PROMPT_ATTACK"]
    inputStrength: Strength
    outputStrength: Strength
    inputModalities: list[Literal["TEXT", "IMAGE"]] | None = Field(None, min_length=1, max_length=2)
    outputModalities: list[Literal["TEXT", "IMAGE"]] | None = Field(None, min_length=1, max_length=2)
    inputAction: Action2 = "BLOCK"
    outputAction: Action2 = "BLOCK"
    inputEnabled: bool = True
    outputEnabled: bool = True


class ContentPolicyConfig(Wire):
    filtersConfig: list[ContentFilterConfig] = Field(min_length=1, max_length=6)
    tierConfig: Tier | None = None


class WordConfig(Wire):
    text: str = Field(min_length=1, max_length=100)
    inputAction: Action2 = "BLOCK"
    outputAction: Action2 = "BLOCK"
    inputEnabled: bool = True
    outputEnabled: bool = True


class ManagedWordsConfig(Wire):
    type: Literal["PROFANITY"]
    inputAction: Action2 = "BLOCK"
    outputAction: Action2 = "BLOCK"
    inputEnabled: bool = True
    outputEnabled: bool = True


class WordPolicyConfig(Wire):
    wordsConfig: list[WordConfig] | None = Field(None, min_length=1)
    managedWordListsConfig: list[ManagedWordsConfig] | None = None


class PiiEntityConfig(Wire):
    type: str
    action: Action3
    inputAction: Action3 | None = None
    outputAction: Action3 | None = None
    inputEnabled: bool = True
    outputEnabled: bool = True


class RegexConfig(Wire):
    name: str = Field(min_length=1, max_length=100)
    description: str | None = Field(None, min_length=1, max_length=1000)
    pattern: str = Field(min_length=1, max_length=500)
    action: Action3
    inputAction: Action3 | None = None
    outputAction: Action3 | None = None
    inputEnabled: bool = True
    outputEnabled: bool = True


class SensitiveInformationPolicyConfig(Wire):
    piiEntitiesConfig: list[PiiEntityConfig] | None = Field(None, min_length=1)
    regexesConfig: list[RegexConfig] | None = Field(None, min_length=1)


class Tag(Wire):
    key: str = Field(min_length=1, max_length=128)
    value: str = Field(max_length=256)


class GuardrailConfigRequest(Wire):
    """The members CreateGuardrail and UpdateGuardrail share."""

    name: str = Field(min_length=1, max_length=50, pattern=NAME_RE.pattern)
    description: str | None = Field(None, min_length=1, max_length=200)
    topicPolicyConfig: TopicPolicyConfig | None = None
    contentPolicyConfig: ContentPolicyConfig | None = None
    wordPolicyConfig: WordPolicyConfig | None = None
    sensitiveInformationPolicyConfig: SensitiveInformationPolicyConfig | None = None
    contextualGroundingPolicyConfig: dict[str, Any] | None = None
    automatedReasoningPolicyConfig: dict[str, Any] | None = None
    crossRegionConfig: dict[str, Any] | None = None
    blockedInputMessaging: str = Field(min_length=1, max_length=500)
    blockedOutputsMessaging: str = Field(min_length=1, max_length=500)
    kmsKeyId: str | None = Field(None, min_length=1, max_length=2048)


class CreateGuardrailRequest(GuardrailConfigRequest):
    tags: list[Tag] = Field(default_factory=list, max_length=200)
    clientRequestToken: str | None = Field(None, min_length=1, max_length=256)


class CreateGuardrailVersionRequest(Wire):
    description: str | None = Field(None, min_length=1, max_length=200)
    clientRequestToken: str | None = Field(None, min_length=1, max_length=256)


@dataclass
class GuardrailSpec:
    """A guardrail's configuration as stored: GetGuardrail's members, plus Outcrop's safety model."""

    name: str
    description: str | None
    blocked_input_messaging: str
    blocked_outputs_messaging: str
    kms_key_id: str | None = None
    policies: dict[str, Any] = field(default_factory=dict)  # topicPolicy, contentPolicy, ...
    safety_model: str | None = None  # imported model name backing content filters

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "blockedInputMessaging": self.blocked_input_messaging,
            "blockedOutputsMessaging": self.blocked_outputs_messaging,
            "kmsKeyId": self.kms_key_id,
            "policies": self.policies,
            "safetyModel": self.safety_model,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GuardrailSpec:
        return cls(
            name=data["name"],
            description=data.get("description"),
            blocked_input_messaging=data["blockedInputMessaging"],
            blocked_outputs_messaging=data["blockedOutputsMessaging"],
            kms_key_id=data.get("kmsKeyId"),
            policies=data.get("policies") or {},
            safety_model=data.get("safetyModel"),
        )


def _validation(message: str, param: str) -> InvalidRequestError:
    return InvalidRequestError(f"1 validation error detected: {message}", param=param)


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "body"
        if err["type"] == "missing":
            parts.append(f"'{where}' is required")
        else:
            shown = repr(err.get("input"))[:80]
            parts.append(f"Value {shown} at '{where}' failed to satisfy constraint: {err['msg']}")
    count = len(exc.errors())
    return f"{count} validation error{'s' if count > 1 else ''} detected: " + "; ".join(parts)


def validate_model(model: type[Wire], data: dict[str, Any]) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = ".".join(str(p) for p in exc.errors()[0]["loc"]) if exc.errors() else None
        raise InvalidRequestError(_describe(exc), param=first) from None


def _directional(cfg: Any, default_action: str) -> dict[str, Any]:
    return {
        "inputAction": cfg.inputAction or default_action,
        "outputAction": cfg.outputAction or default_action,
        "inputEnabled": cfg.inputEnabled,
        "outputEnabled": cfg.outputEnabled,
    }


def compile_regex(pattern: str, where: str) -> regex.Pattern[str]:
    """A custom regex, compiled; an invalid one is a ValidationException naming it and the error."""
    try:
        compiled = regex.compile(pattern)
    except regex.error as exc:
        raise _validation(
            f"Value {pattern!r} at '{where}' is not a valid regular expression ({exc}). Fix the pattern; "
            "the syntax is Python's (PCRE-like: \\d, \\w, (?i), lookarounds).",
            where,
        ) from None
    if compiled.fullmatch(""):
        raise _validation(
            f"Value {pattern!r} at '{where}' matches the empty string, so it would match everywhere. "
            "Make it require at least one character (for example use + instead of *).",
            where,
        )
    return compiled


def _topics(cfg: TopicPolicyConfig) -> dict[str, Any]:
    topics = []
    for i, t in enumerate(cfg.topicsConfig):
        for j, example in enumerate(t.examples):
            if not 1 <= len(example) <= MAX_TOPIC_EXAMPLE_CHARS:
                raise _validation(
                    f"Value at 'topicPolicyConfig.topicsConfig.{i}.examples.{j}' has {len(example)} characters; "
                    f"an example must have 1-{MAX_TOPIC_EXAMPLE_CHARS}.",
                    f"topicPolicyConfig.topicsConfig.{i}.examples",
                )
        topics.append(
            {
                "name": t.name,
                "definition": t.definition,
                "examples": list(t.examples),
                "type": t.type,
                **_directional(t, "BLOCK"),
            }
        )
    names = [t["name"].lower() for t in topics]
    if len(set(names)) != len(names):
        raise _validation(
            "topicPolicyConfig.topicsConfig has two topics with the same name; give each a distinct name.",
            "topicPolicyConfig.topicsConfig",
        )
    return {"topics": topics, "tier": {"tierName": cfg.tierConfig.tierName if cfg.tierConfig else "CLASSIC"}}


def _content(cfg: ContentPolicyConfig, safety_model: str | None) -> dict[str, Any]:
    types = [f.type for f in cfg.filtersConfig]
    if len(set(types)) != len(types):
        raise _validation(
            "contentPolicyConfig.filtersConfig names a filter type twice; give each type once.",
            "contentPolicyConfig.filtersConfig",
        )
    filters = []
    for i, f in enumerate(cfg.filtersConfig):
        if f.type == "PROMPT_ATTACK" and f.outputStrength != "NONE":
            raise _validation(
                f"contentPolicyConfig.filtersConfig.{i}: PROMPT_ATTACK applies to input only; set its "
                "outputStrength to NONE.",
                f"contentPolicyConfig.filtersConfig.{i}.outputStrength",
            )
        filters.append(
            {
                "type": f.type,
                "inputStrength": f.inputStrength,
                "outputStrength": f.outputStrength,
                "inputModalities": f.inputModalities or ["TEXT"],
                "outputModalities": f.outputModalities or ["TEXT"],
                **_directional(f, "BLOCK"),
            }
        )
    active = any(f["inputStrength"] != "NONE" or f["outputStrength"] != "NONE" for f in filters)
    if active and not safety_model:
        raise _validation(
            "contentPolicyConfig needs a safety model, and this guardrail names none. Outcrop backs content "
            "filters with an imported Llama Guard-style model instead of pretending: import one (for example "
            "as 'llama-guard') and name it in the guardrail's tags as "
            f"{{'key': '{SAFETY_MODEL_TAG}', 'value': 'llama-guard'}}, or remove contentPolicyConfig.",
            "contentPolicyConfig",
        )
    return {
        "filters": filters,
        "tier": {"tierName": cfg.tierConfig.tierName if cfg.tierConfig else "CLASSIC"},
    }


def _words(cfg: WordPolicyConfig) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if cfg.wordsConfig:
        if len(cfg.wordsConfig) > MAX_WORDS:
            raise _validation(
                f"wordPolicyConfig.wordsConfig has {len(cfg.wordsConfig):,} words; the limit is {MAX_WORDS:,}. "
                "Remove some, or move a whole category to the managed PROFANITY list.",
                "wordPolicyConfig.wordsConfig",
            )
        for i, w in enumerate(cfg.wordsConfig):
            if not w.text.strip():
                raise _validation(
                    f"wordPolicyConfig.wordsConfig.{i}.text is blank; give a word or phrase.",
                    f"wordPolicyConfig.wordsConfig.{i}.text",
                )
        out["words"] = [{"text": w.text, **_directional(w, "BLOCK")} for w in cfg.wordsConfig]
    if cfg.managedWordListsConfig:
        if len({m.type for m in cfg.managedWordListsConfig}) != len(cfg.managedWordListsConfig):
            raise _validation(
                "wordPolicyConfig.managedWordListsConfig names PROFANITY twice; give it once.",
                "wordPolicyConfig.managedWordListsConfig",
            )
        out["managedWordLists"] = [
            {"type": m.type, **_directional(m, "BLOCK")} for m in cfg.managedWordListsConfig
        ]
    if not out:
        raise _validation(
            "wordPolicyConfig has neither wordsConfig nor managedWordListsConfig; give one or remove it.",
            "wordPolicyConfig",
        )
    return out


def _sensitive(cfg: SensitiveInformationPolicyConfig) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if cfg.piiEntitiesConfig:
        seen: set[str] = set()
        entities = []
        for i, e in enumerate(cfg.piiEntitiesConfig):
            if e.type not in SUPPORTED_PII_TYPES:
                raise _validation(
                    f"Value {e.type!r} at 'sensitiveInformationPolicyConfig.piiEntitiesConfig.{i}.type' is not an "
                    f"entity type this server detects. Supported: {', '.join(sorted(SUPPORTED_PII_TYPES))}. "
                    "For anything else, add a custom regex in regexesConfig.",
                    f"sensitiveInformationPolicyConfig.piiEntitiesConfig.{i}.type",
                )
            if e.type in seen:
                raise _validation(
                    f"sensitiveInformationPolicyConfig.piiEntitiesConfig names {e.type} twice; give it once.",
                    "sensitiveInformationPolicyConfig.piiEntitiesConfig",
                )
            seen.add(e.type)
            entities.append({"type": e.type, "action": e.action, **_directional(e, e.action)})
        out["piiEntities"] = entities
    if cfg.regexesConfig:
        if len(cfg.regexesConfig) > MAX_REGEXES:
            raise _validation(
                f"sensitiveInformationPolicyConfig.regexesConfig has {len(cfg.regexesConfig)} regexes; the limit "
                f"is {MAX_REGEXES}.",
                "sensitiveInformationPolicyConfig.regexesConfig",
            )
        regexes = []
        for i, r in enumerate(cfg.regexesConfig):
            compile_regex(r.pattern, f"sensitiveInformationPolicyConfig.regexesConfig.{i}.pattern")
            item: dict[str, Any] = {"name": r.name, "pattern": r.pattern, "action": r.action}
            if r.description:
                item["description"] = r.description
            item.update(_directional(r, r.action))
            regexes.append(item)
        out["regexes"] = regexes
    if not out:
        raise _validation(
            "sensitiveInformationPolicyConfig has neither piiEntitiesConfig nor regexesConfig; give one or "
            "remove it.",
            "sensitiveInformationPolicyConfig",
        )
    return out


def safety_model_from_tags(tags: list[dict[str, str]]) -> str | None:
    for tag in tags:
        if tag.get("key") == SAFETY_MODEL_TAG and tag.get("value"):
            return tag["value"]
    return None


def parse_guardrail_config(body: GuardrailConfigRequest, safety_model: str | None) -> GuardrailSpec:
    """A checked CreateGuardrail/UpdateGuardrail body as the spec to store."""
    if body.contextualGroundingPolicyConfig is not None:
        raise _validation(
            "contextualGroundingPolicyConfig is not supported by this server: Outcrop has no grounding "
            "model to score answers against their sources, so it refuses rather than pretend. Remove it.",
            "contextualGroundingPolicyConfig",
        )
    if body.automatedReasoningPolicyConfig is not None:
        raise _validation(
            "automatedReasoningPolicyConfig is not supported by this server. Remove it.",
            "automatedReasoningPolicyConfig",
        )
    if body.crossRegionConfig is not None:
        raise _validation(
            "crossRegionConfig is not supported: an Outcrop server is one region. Remove it.",
            "crossRegionConfig",
        )
    policies: dict[str, Any] = {}
    if body.topicPolicyConfig is not None:
        policies["topicPolicy"] = _topics(body.topicPolicyConfig)
    if body.contentPolicyConfig is not None:
        policies["contentPolicy"] = _content(body.contentPolicyConfig, safety_model)
    if body.wordPolicyConfig is not None:
        policies["wordPolicy"] = _words(body.wordPolicyConfig)
    if body.sensitiveInformationPolicyConfig is not None:
        policies["sensitiveInformationPolicy"] = _sensitive(body.sensitiveInformationPolicyConfig)
    return GuardrailSpec(
        name=body.name,
        description=body.description,
        blocked_input_messaging=body.blockedInputMessaging,
        blocked_outputs_messaging=body.blockedOutputsMessaging,
        kms_key_id=body.kmsKeyId,
        policies=policies,
        safety_model=safety_model if "contentPolicy" in policies else None,
    )
