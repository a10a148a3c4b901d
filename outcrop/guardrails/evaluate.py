"""One guardrail version applied to text: action, outputs and assessments in bedrock-runtime's shapes.

:class:`CompiledGuardrail` is built once per stored version (matchers, compiled regexes, topic
classifier) and then :meth:`CompiledGuardrail.assess` is pure: text blocks in, an
:class:`Outcome` out. Content filters need a call to the safety model, so their findings are
passed in (``content_findings``) by the service, which makes that call.

Semantics (Bedrock's): a policy applies to a source (INPUT: what goes to the model; OUTPUT: what
comes back) when it is enabled for that source; BLOCK findings make the whole answer the blocked
message; ANONYMIZE findings are replaced by ``{TYPE}`` (``{EMAIL}``, or the regex's name) and the
masked text is the output; NONE findings are reported (detected, action NONE) and change nothing.
Either BLOCK or ANONYMIZE means ``GUARDRAIL_INTERVENED``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import regex

from outcrop.guardrails import detectors
from outcrop.guardrails.detectors import Span
from outcrop.guardrails.policy import GuardrailSpec

Source = Literal["INPUT", "OUTPUT"]
# Bedrock bills (and reports) text in units of 1,000 characters.
CHARS_PER_UNIT = 1000

POLICY_NAMES = ("topicPolicy", "contentPolicy", "wordPolicy", "sensitiveInformationPolicy")

_PAST = {"BLOCK": "BLOCKED", "ANONYMIZE": "ANONYMIZED", "NONE": "NONE"}


def _direction(item: dict[str, Any], source: Source) -> tuple[bool, str]:
    """(enabled, action) of a policy entry for this source."""
    if source == "INPUT":
        return bool(item.get("inputEnabled", True)), str(
            item.get("inputAction") or item.get("action") or "BLOCK"
        )
    return bool(item.get("outputEnabled", True)), str(
        item.get("outputAction") or item.get("action") or "BLOCK"
    )


@dataclass
class ContentFinding:
    """A safety-model verdict for one content filter type (Llama Guard answers unsafe + categories)."""

    type: str
    confidence: str = "HIGH"


@dataclass
class Outcome:
    """What one evaluation decided."""

    action: str  # NONE | GUARDRAIL_INTERVENED
    blocked: bool
    outputs: list[str]  # per input block: the text to use (masked), or [blocked message] when blocked
    assessment: dict[str, Any]  # GuardrailAssessment
    # (policy, kind, action) per finding that acted, for metrics: ("sensitiveInformationPolicy", "EMAIL", "ANONYMIZED")
    interventions: list[tuple[str, str, str]] = field(default_factory=list)
    topic_explanations: list[dict[str, Any]] = field(default_factory=list)
    characters: int = 0
    latency_ms: int = 0

    @property
    def intervened(self) -> bool:
        return self.action == "GUARDRAIL_INTERVENED"

    @property
    def anonymized(self) -> bool:
        return self.intervened and not self.blocked


class CompiledGuardrail:
    """A stored guardrail version, ready to evaluate text (see the module docstring)."""

    def __init__(self, guardrail_id: str, version: str, arn: str, spec: GuardrailSpec) -> None:
        self.id = guardrail_id
        self.version = version
        self.arn = arn
        self.spec = spec
        p = spec.policies
        self.topics: list[dict[str, Any]] = (p.get("topicPolicy") or {}).get("topics", [])
        self.filters: list[dict[str, Any]] = (p.get("contentPolicy") or {}).get("filters", [])
        words = p.get("wordPolicy") or {}
        self.words: list[dict[str, Any]] = words.get("words", [])
        self.managed: list[dict[str, Any]] = words.get("managedWordLists", [])
        sensitive = p.get("sensitiveInformationPolicy") or {}
        self.pii: list[dict[str, Any]] = sensitive.get("piiEntities", [])
        self.regexes: list[dict[str, Any]] = sensitive.get("regexes", [])
        self._word_matcher = detectors.WordMatcher()
        self._word_config: dict[str, dict[str, Any]] = {}
        for w in self.words:
            self._word_matcher.add(w["text"], w["text"])
            self._word_config.setdefault(w["text"], w)
        self._compiled_regexes: dict[str, regex.Pattern[str]] = {
            r["name"]: regex.compile(r["pattern"]) for r in self.regexes
        }
        self._classifier = detectors.TopicClassifier(self.topics) if self.topics else None
        detectors.warm(e["type"] for e in self.pii)

    @property
    def blocked_input_messaging(self) -> str:
        return self.spec.blocked_input_messaging

    @property
    def blocked_outputs_messaging(self) -> str:
        return self.spec.blocked_outputs_messaging

    def content_filters_for(self, source: Source) -> list[dict[str, Any]]:
        """Content filters that apply to ``source`` (strength above NONE and enabled)."""
        key = "inputStrength" if source == "INPUT" else "outputStrength"
        return [f for f in self.filters if f.get(key, "NONE") != "NONE" and _direction(f, source)[0]]

    def usage(self, characters: int) -> dict[str, int]:
        units = math.ceil(characters / CHARS_PER_UNIT) if characters else 0
        return {
            "topicPolicyUnits": units if self.topics else 0,
            "contentPolicyUnits": units if self.filters else 0,
            "wordPolicyUnits": units if (self.words or self.managed) else 0,
            "sensitiveInformationPolicyUnits": units if self.regexes else 0,
            "sensitiveInformationPolicyFreeUnits": units if self.pii else 0,
            "contextualGroundingPolicyUnits": 0,
        }

    def assess(
        self,
        texts: list[str],
        source: Source,
        *,
        full: bool = False,
        content_findings: list[ContentFinding] | None = None,
    ) -> Outcome:
        started = time.perf_counter()
        blocked = False
        outputs: list[str] = []
        interventions: list[tuple[str, str, str]] = []
        topic_out: list[dict[str, Any]] = []
        explanations: list[dict[str, Any]] = []
        custom_words: list[dict[str, Any]] = []
        managed_words: list[dict[str, Any]] = []
        pii_out: list[dict[str, Any]] = []
        regex_out: list[dict[str, Any]] = []
        content_out: list[dict[str, Any]] = []

        pii_config = {e["type"]: e for e in self.pii if _direction(e, source)[0]}
        regex_config = {r["name"]: r for r in self.regexes if _direction(r, source)[0]}
        managed_on = [m for m in self.managed if _direction(m, source)[0]]
        topics_on = {t["name"]: t for t in self.topics if _direction(t, source)[0]}
        seen_topics: set[str] = set()

        for text in texts:
            lowered = text.lower()
            words = detectors.word_set(lowered) if (self.words or managed_on) else None
            # -- words
            for span in self._word_matcher.find(text, lowered, words):
                cfg = self._word_config[span.kind]
                enabled, action = _direction(cfg, source)
                if not enabled:
                    continue
                custom_words.append({"match": span.match, "action": _PAST[action], "detected": True})
                if action == "BLOCK":
                    blocked = True
                    interventions.append(("wordPolicy", "CUSTOM_WORD", "BLOCKED"))
            for managed in managed_on:
                _enabled, action = _direction(managed, source)
                for span in detectors.profanity_matcher().find(text, lowered, words):
                    managed_words.append(
                        {"match": span.match, "type": "PROFANITY", "action": _PAST[action], "detected": True}
                    )
                    if action == "BLOCK":
                        blocked = True
                        interventions.append(("wordPolicy", "PROFANITY", "BLOCKED"))
            # -- topics
            if self._classifier is not None and topics_on:
                for hit in self._classifier.classify(text, set(topics_on)):
                    if hit.name in seen_topics:
                        continue
                    seen_topics.add(hit.name)
                    _enabled, action = _direction(topics_on[hit.name], source)
                    topic_out.append(
                        {"name": hit.name, "type": "DENY", "action": _PAST[action], "detected": True}
                    )
                    explanations.append(
                        {
                            "topic": hit.name,
                            "method": hit.method,
                            "score": hit.score,
                            "matchedTerms": hit.matched_terms,
                        }
                    )
                    if action == "BLOCK":
                        blocked = True
                        interventions.append(("topicPolicy", hit.name, "BLOCKED"))
            # -- sensitive information
            spans: list[Span] = []
            if pii_config:
                spans.extend(detectors.find_pii(text, list(pii_config), lowered))
            if regex_config:
                spans.extend(
                    detectors.find_regexes(text, [(n, self._compiled_regexes[n]) for n in regex_config])
                )
            masked: list[str] = []
            cursor = 0
            for span in detectors.non_overlapping(spans):
                is_pii = span.kind in pii_config
                cfg = pii_config[span.kind] if is_pii else regex_config[span.kind]
                _enabled, action = _direction(cfg, source)
                if is_pii:
                    pii_out.append(
                        {"match": span.match, "type": span.kind, "action": _PAST[action], "detected": True}
                    )
                else:
                    regex_out.append(
                        {
                            "name": span.kind,
                            "match": span.match,
                            "regex": cfg["pattern"],
                            "action": _PAST[action],
                            "detected": True,
                        }
                    )
                kind = span.kind if is_pii else "REGEX"
                if action == "BLOCK":
                    blocked = True
                    interventions.append(("sensitiveInformationPolicy", kind, "BLOCKED"))
                elif action == "ANONYMIZE":
                    masked.append(text[cursor : span.start])
                    masked.append("{" + span.kind + "}")
                    cursor = span.end
                    interventions.append(("sensitiveInformationPolicy", kind, "ANONYMIZED"))
            masked.append(text[cursor:])
            outputs.append("".join(masked))

        # -- content filters (the safety model's findings, passed in)
        key = "inputStrength" if source == "INPUT" else "outputStrength"
        found = {f.type: f for f in content_findings or []}
        for flt in self.content_filters_for(source):
            _enabled, action = _direction(flt, source)
            finding = found.get(flt["type"])
            if finding is None:
                if full:
                    content_out.append(
                        {
                            "type": flt["type"],
                            "confidence": "NONE",
                            "filterStrength": flt[key],
                            "action": "NONE",
                            "detected": False,
                        }
                    )
                continue
            content_out.append(
                {
                    "type": flt["type"],
                    "confidence": finding.confidence,
                    "filterStrength": flt[key],
                    "action": "BLOCKED" if action == "BLOCK" else "NONE",
                    "detected": True,
                }
            )
            if action == "BLOCK":
                blocked = True
                interventions.append(("contentPolicy", flt["type"], "BLOCKED"))
        if full:
            for name in topics_on:
                if name not in seen_topics:
                    topic_out.append({"name": name, "type": "DENY", "action": "NONE", "detected": False})

        characters = sum(len(t) for t in texts)
        assessment: dict[str, Any] = {}
        if topic_out:
            assessment["topicPolicy"] = {"topics": topic_out}
        if content_out:
            assessment["contentPolicy"] = {"filters": content_out}
        if custom_words or managed_words:
            assessment["wordPolicy"] = {"customWords": custom_words, "managedWordLists": managed_words}
        if pii_out or regex_out:
            assessment["sensitiveInformationPolicy"] = {"piiEntities": pii_out, "regexes": regex_out}
        intervened = bool(interventions)
        if blocked:
            message = self.blocked_input_messaging if source == "INPUT" else self.blocked_outputs_messaging
            outputs = [message]
        latency_ms = int((time.perf_counter() - started) * 1000)
        assessment["invocationMetrics"] = {
            "guardrailProcessingLatency": latency_ms,
            "usage": self.usage(characters),
            "guardrailCoverage": {"textCharacters": {"guarded": characters, "total": characters}},
        }
        return Outcome(
            action="GUARDRAIL_INTERVENED" if intervened else "NONE",
            blocked=blocked,
            outputs=outputs,
            assessment=assessment,
            interventions=interventions,
            topic_explanations=explanations,
            characters=characters,
            latency_ms=latency_ms,
        )
