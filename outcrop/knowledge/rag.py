"""RetrieveAndGenerate: retrieve from a knowledge base, prompt an imported text model with what was found,
and answer with citations that point at the retrieved chunks.

The wire shapes are botocore's ``bedrock-agent-runtime`` 2023-07-26 service model
(``RetrieveAndGenerateRequest`` / ``Response``, and the ``RetrieveAndGenerateStream`` events). This module
holds what does not depend on HTTP: the checked request (:class:`RetrieveAndGenerateRequest`), the
:class:`Retriever` it reads from (the knowledge service at ``services.extra["knowledge"]`` in a server, a
fake in unit tests), the prompt (:func:`build_prompt`), the copy's request body (:func:`copy_request`),
and the output parser (:class:`CitedAnswer`) that turns what the model wrote into ``output.text`` and
``citations``. The route (``outcrop/api/agent/kb_runtime.py``) runs them around the same serving call
Converse makes.

Citations. Bedrock's default prompt asks the model to answer in ``<answer><answer_part><text>...</text>
<sources><source>N</source></sources></answer_part>...</answer>`` (the ``$output_format_instructions$``
text), where N numbers the search results; each part becomes one citation whose ``retrievedReferences``
are the results it names, and ``output.text`` is the parts' text without the markup. A model that does
not follow the format (a small model, a random-weight test model, a custom template without the
instructions) gets one citation over its whole answer, referencing the results it marked as ``[N]``, or
else every result the answer was generated from. ``span.end`` is the index of the part's last character
(inclusive), so ``text[start:end + 1]`` is the part.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from outcrop.errors import InvalidRequestError
from outcrop.protocol import bedrock_runtime as p

# -- the seam: a knowledge base's retrieval ---------------------------------------------------------


class Retriever(Protocol):
    """What RetrieveAndGenerate needs of the knowledge service (``services.extra["knowledge"]``).

    ``retrieve`` returns Bedrock ``KnowledgeBaseRetrievalResult`` dicts (``content``, ``location``,
    ``metadata``, ``score``), best first; it raises NotFoundError for an unknown knowledge base and
    InvalidRequestError for a bad filter.
    """

    async def retrieve(
        self,
        knowledge_base_id: str,
        text: str,
        *,
        number_of_results: int = 5,
        search_type: str | None = None,
        filter: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]: ...


# -- the request (botocore bedrock-agent-runtime 2023-07-26, RetrieveAndGenerateRequest) -------------

# Bedrock's default number of results when the request names none.
DEFAULT_NUMBER_OF_RESULTS = 5
_Unit = Annotated[float, Field(strict=True, ge=0.0, le=1.0, allow_inf_nan=False)]
# BedrockModelArn's pattern in the service model.
_MODEL_ARN = (
    r"^(arn:aws(-[^:]+)?:(bedrock|sagemaker):[a-z0-9-]{1,20}:([0-9]{12})?:([a-z-]+/)?)?"
    r"([a-z0-9.-]{1,63}){0,2}(([:][a-z0-9-]{1,63}){0,2})?(/[a-z0-9]{1,12})?$"
)


class _Shape(BaseModel):
    # Unknown members are ignored, as AWS services do, so newer SDKs keep working.
    model_config = ConfigDict(extra="ignore")


class TextInferenceConfig(_Shape):
    maxTokens: StrictInt | None = Field(None, ge=0, le=65536)
    stopSequences: list[Annotated[StrictStr, Field(min_length=1, max_length=1000)]] | None = Field(
        None, max_length=4
    )
    temperature: _Unit | None = None
    topP: _Unit | None = None


class InferenceConfig(_Shape):
    textInferenceConfig: TextInferenceConfig | None = None


class PromptTemplate(_Shape):
    textPromptTemplate: StrictStr | None = Field(None, min_length=1, max_length=4000)


class PerformanceConfiguration(_Shape):
    latency: Literal["standard", "optimized"] | None = None


class GuardrailConfiguration(_Shape):
    guardrailId: StrictStr = Field(max_length=64, pattern=r"^[a-z0-9]+$")
    guardrailVersion: StrictStr = Field(min_length=1, max_length=5, pattern=r"^(([1-9][0-9]{0,7})|(DRAFT))$")


class GenerationConfiguration(_Shape):
    additionalModelRequestFields: dict[Annotated[str, Field(min_length=1, max_length=100)], Any] | None = None
    guardrailConfiguration: GuardrailConfiguration | None = None
    inferenceConfig: InferenceConfig | None = None
    performanceConfig: PerformanceConfiguration | None = None
    promptTemplate: PromptTemplate | None = None


class VectorSearchConfiguration(_Shape):
    filter: dict[str, Any] | None = None
    numberOfResults: StrictInt | None = Field(None, ge=1, le=100)
    overrideSearchType: Literal["HYBRID", "SEMANTIC"] | None = None
    implicitFilterConfiguration: Any = None  # not supported: refused by check()
    rerankingConfiguration: Any = None  # not supported: refused by check()


class RetrievalConfiguration(_Shape):
    vectorSearchConfiguration: VectorSearchConfiguration | None = None
    managedSearchConfiguration: Any = None  # not supported: refused by check()


class KnowledgeBaseConfiguration(_Shape):
    knowledgeBaseId: StrictStr = Field(max_length=10, pattern=r"^[0-9a-zA-Z]+$")
    modelArn: StrictStr = Field(min_length=1, max_length=2048, pattern=_MODEL_ARN)
    generationConfiguration: GenerationConfiguration | None = None
    retrievalConfiguration: RetrievalConfiguration | None = None
    orchestrationConfiguration: Any = None  # not supported: refused by check()


class RetrieveAndGenerateConfiguration(_Shape):
    type: Literal["KNOWLEDGE_BASE", "EXTERNAL_SOURCES"]
    knowledgeBaseConfiguration: KnowledgeBaseConfiguration | None = None
    externalSourcesConfiguration: Any = None  # not supported: refused by check()


class RetrieveAndGenerateInput(_Shape):
    text: StrictStr = Field(max_length=1000)


class SessionConfiguration(_Shape):
    kmsKeyArn: StrictStr = Field(
        min_length=1,
        max_length=2048,
        pattern=r"^arn:aws(|-cn|-us-gov):kms:[a-zA-Z0-9-]*:[0-9]{12}:key/[a-zA-Z0-9-]{36}$",
    )


class UserContext(_Shape):
    userId: StrictStr


class RetrieveAndGenerateRequest(_Shape):
    """A RetrieveAndGenerate or RetrieveAndGenerateStream body (the two share their request shape)."""

    input: RetrieveAndGenerateInput
    retrieveAndGenerateConfiguration: RetrieveAndGenerateConfiguration | None = None
    sessionConfiguration: SessionConfiguration | None = None
    sessionId: StrictStr | None = Field(None, min_length=2, max_length=100, pattern=r"^[0-9a-zA-Z._:-]+$")
    userContext: UserContext | None = None

    def knowledge_base(self) -> KnowledgeBaseConfiguration:
        """The knowledge-base configuration, after refusing what Outcrop does not do (each refusal says
        what to send instead)."""
        config = self.retrieveAndGenerateConfiguration
        if config is None:
            raise InvalidRequestError(
                "retrieveAndGenerateConfiguration is required: send {'type': 'KNOWLEDGE_BASE', "
                "'knowledgeBaseConfiguration': {'knowledgeBaseId': ..., 'modelArn': <an imported text model>}}.",
                param="retrieveAndGenerateConfiguration",
            )
        if config.type == "EXTERNAL_SOURCES" or config.externalSourcesConfiguration is not None:
            raise InvalidRequestError(
                "externalSourcesConfiguration (type EXTERNAL_SOURCES) is not supported: Outcrop answers from "
                "its knowledge bases only. Ingest the documents into a knowledge base (bedrock-agent "
                "CreateDataSource + StartIngestionJob) and send type KNOWLEDGE_BASE with its knowledgeBaseId.",
                param="retrieveAndGenerateConfiguration.externalSourcesConfiguration",
            )
        if not self.input.text.strip():
            raise InvalidRequestError(
                "input.text is empty: send the question to retrieve for and answer.", param="input.text"
            )
        kb = config.knowledgeBaseConfiguration
        if kb is None:
            raise InvalidRequestError(
                "type KNOWLEDGE_BASE needs retrieveAndGenerateConfiguration.knowledgeBaseConfiguration "
                "{'knowledgeBaseId': ..., 'modelArn': ...}.",
                param="retrieveAndGenerateConfiguration.knowledgeBaseConfiguration",
            )
        where = "retrieveAndGenerateConfiguration.knowledgeBaseConfiguration"
        if kb.orchestrationConfiguration is not None:
            raise _unsupported(
                f"{where}.orchestrationConfiguration",
                "Outcrop retrieves with input.text as sent (no query reformulation or decomposition); "
                "remove orchestrationConfiguration, and put a follow-up's context in input.text if it needs it",
            )
        retrieval = kb.retrievalConfiguration
        if retrieval is not None and retrieval.managedSearchConfiguration is not None:
            raise _unsupported(
                f"{where}.retrievalConfiguration.managedSearchConfiguration",
                "Outcrop's knowledge bases are vector knowledge bases; send vectorSearchConfiguration instead",
            )
        vector = retrieval.vectorSearchConfiguration if retrieval else None
        if vector is not None and vector.rerankingConfiguration is not None:
            raise _unsupported(
                f"{where}.retrievalConfiguration.vectorSearchConfiguration.rerankingConfiguration",
                "remove it; overrideSearchType HYBRID combines vector and full-text ranking instead",
            )
        if vector is not None and vector.implicitFilterConfiguration is not None:
            raise _unsupported(
                f"{where}.retrievalConfiguration.vectorSearchConfiguration.implicitFilterConfiguration",
                "send an explicit filter (vectorSearchConfiguration.filter) instead",
            )
        generation = kb.generationConfiguration
        template = (
            generation.promptTemplate.textPromptTemplate if generation and generation.promptTemplate else None
        )
        if template is not None and SEARCH_RESULTS not in template:
            raise InvalidRequestError(
                f"The prompt template must contain {SEARCH_RESULTS}, where the retrieved results go (and may "
                f"contain {QUERY}, {OUTPUT_FORMAT_INSTRUCTIONS} and {CURRENT_TIME}). Add {SEARCH_RESULTS} to "
                "generationConfiguration.promptTemplate.textPromptTemplate.",
                param=f"{where}.generationConfiguration.promptTemplate.textPromptTemplate",
            )
        return kb


def _unsupported(where: str, fix: str) -> InvalidRequestError:
    return InvalidRequestError(f"{where} is not supported by Outcrop: {fix}.", param=where)


# -- retrieval ---------------------------------------------------------------------------------------


async def retrieve(retriever: Retriever, kb: KnowledgeBaseConfiguration, text: str) -> list[dict[str, Any]]:
    """The knowledge base's results for ``text`` under the request's vectorSearchConfiguration."""
    retrieval = kb.retrievalConfiguration
    vector = retrieval.vectorSearchConfiguration if retrieval else None
    return await retriever.retrieve(
        kb.knowledgeBaseId,
        text,
        number_of_results=(vector.numberOfResults if vector else None) or DEFAULT_NUMBER_OF_RESULTS,
        search_type=vector.overrideSearchType if vector else None,
        filter=vector.filter if vector else None,
    )


def reference(result: dict[str, Any]) -> dict[str, Any]:
    """A retrieval result as a citation's ``RetrievedReference`` (content, location, metadata; no score)."""
    out = {key: result[key] for key in ("content", "location") if result.get(key) is not None}
    if result.get("metadata"):  # RetrievalResultMetadata has at least one entry when present
        out["metadata"] = result["metadata"]
    return out


# -- the prompt --------------------------------------------------------------------------------------

SEARCH_RESULTS = "$search_results$"
QUERY = "$query$"
OUTPUT_FORMAT_INSTRUCTIONS = "$output_format_instructions$"
CURRENT_TIME = "$current_time$"

OUTPUT_FORMAT = """\
If you use information from a search result in your answer, cite it: each search result has a source \
number in <source>, and every part of your answer lists the numbers of the results it used.
Answer in exactly this format:
<answer>
<answer_part>
<text>
first part of the answer
</text>
<sources>
<source>1</source>
</sources>
</answer_part>
<answer_part>
<text>
second part of the answer
</text>
<sources>
<source>2</source>
<source>3</source>
</sources>
</answer_part>
</answer>"""

# Bedrock's default generation prompt in spirit: answer from the search results only, say so when they
# do not hold the answer, and cite.
DEFAULT_PROMPT_TEMPLATE = f"""\
You are a question answering agent. I will give you a set of search results, and the user will ask a \
question. Answer the question using only information from the search results. If the search results \
do not contain the answer, say that you could not find an exact answer to the question. A user's \
assertion is not a fact: check it against the search results.

Here are the search results in numbered order:
{SEARCH_RESULTS}

{OUTPUT_FORMAT_INSTRUCTIONS}"""


def format_search_results(results: list[dict[str, Any]]) -> str:
    """The retrieved results as the prompt shows them, numbered from 1 (the numbers the model cites)."""
    blocks = []
    for number, result in enumerate(results, start=1):
        text = ((result.get("content") or {}).get("text") or "").strip()
        blocks.append(
            f"<search_result>\n<source>{number}</source>\n<content>\n{text}\n</content>\n</search_result>"
        )
    return (
        "<search_results>\n" + "\n".join(blocks) + "\n</search_results>" if blocks else "(no search results)"
    )


@dataclass(frozen=True)
class Prompt:
    """What the model is asked: an optional system text and the user's turn (earlier turns come apart)."""

    system: str | None
    user: str


def build_prompt(
    template: str | None, query: str, results: list[dict[str, Any]], *, now: datetime | None = None
) -> Prompt:
    """The prompt for ``query``: the template with its placeholders filled in.

    A template that holds ``$query$`` is the user's turn itself; otherwise it is the system text and the
    question is the user's turn (Bedrock's two styles, text-completion and messages).
    """
    template = template or DEFAULT_PROMPT_TEMPLATE
    values = {
        SEARCH_RESULTS: format_search_results(results),
        OUTPUT_FORMAT_INSTRUCTIONS: OUTPUT_FORMAT,
        CURRENT_TIME: (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        QUERY: query,
    }
    # One pass, so a placeholder inside a retrieved chunk or the question is never expanded.
    rendered = re.sub("|".join(re.escape(k) for k in values), lambda m: values[m.group(0)], template)
    if QUERY in template:
        return Prompt(system=None, user=rendered)
    return Prompt(system=rendered, user=query)


def copy_request(
    prompt: Prompt,
    history: list[tuple[str, str]],
    generation: GenerationConfiguration | None,
    *,
    chat: bool,
) -> tuple[str, dict[str, Any]]:
    """The copy's path and body: an OpenAI chat request (the model has a chat template) built exactly as
    Converse builds it, or a completion request with the turns written out (it has none).

    ``history`` is the session's earlier ``(question, answer)`` turns, oldest first.
    """
    text_config = (
        generation.inferenceConfig.textInferenceConfig
        if generation and generation.inferenceConfig and generation.inferenceConfig.textInferenceConfig
        else None
    )
    inference: dict[str, Any] = {}
    if text_config is not None:
        if text_config.maxTokens:  # 0 (the service model's minimum) means the default
            inference["maxTokens"] = text_config.maxTokens
        for key in ("temperature", "topP"):
            if getattr(text_config, key) is not None:
                inference[key] = float(getattr(text_config, key))
        if text_config.stopSequences:
            inference["stopSequences"] = text_config.stopSequences
    messages: list[dict[str, Any]] = []
    for question, answer in history:
        messages.append({"role": "user", "content": [{"text": question}]})
        messages.append({"role": "assistant", "content": [{"text": answer or "(no answer)"}]})
    messages.append({"role": "user", "content": [{"text": prompt.user}]})
    converse: dict[str, Any] = {"messages": messages, "inferenceConfig": inference}
    if prompt.system:
        converse["system"] = [{"text": prompt.system}]
    if generation is not None and generation.additionalModelRequestFields is not None:
        converse["additionalModelRequestFields"] = generation.additionalModelRequestFields
    body = p.parse_converse(converse).to_chat()  # Converse's own checks and translation
    if chat:
        return "/v1/chat/completions", body
    lines = [prompt.system, ""] if prompt.system else []
    for question, answer in history:
        lines += [f"User: {question}", f"Assistant: {answer}"]
    lines += [f"User: {prompt.user}", "Assistant:"]
    completion = {k: v for k, v in body.items() if k != "messages"}
    completion["prompt"] = "\n".join(lines)
    return "/v1/completions", completion


def generated_text(path: str, resp: dict[str, Any]) -> str:
    """The text of a copy's (non-streaming) answer."""
    choice = (resp.get("choices") or [{}])[0]
    if path == "/v1/chat/completions":
        return str((choice.get("message") or {}).get("content") or "")
    return str(choice.get("text") or "")


def chunk_text(path: str, chunk: dict[str, Any]) -> str:
    """The text of one streamed chunk of a copy's answer."""
    out = []
    for choice in chunk.get("choices") or []:
        if path == "/v1/chat/completions":
            out.append((choice.get("delta") or {}).get("content") or "")
        else:
            out.append(choice.get("text") or "")
    return "".join(out)


# -- the answer: output text and citations -----------------------------------------------------------

_TAGS = ("answer", "answer_part", "text", "sources", "source")
_TAG = re.compile(r"</?(" + "|".join(_TAGS) + r")>")
_LONGEST_TAG = max(len(f"</{t}>") for t in _TAGS)
_MARKER = re.compile(r"\[(\d{1,3})\]")

Event = tuple[Literal["output", "citation"], dict[str, Any]]


class CitedAnswer:
    """The model's output, fed as it arrives, as RetrieveAndGenerate's ``output.text`` and ``citations``.

    :meth:`feed` and :meth:`end` return the stream's events as they become known: ``("output", {"text"})``
    for each piece of answer text and ``("citation", Citation)`` when a cited part is complete.
    """

    def __init__(self, results: list[dict[str, Any]]) -> None:
        self.references = [reference(r) for r in results]
        self.text = ""
        self.citations: list[dict[str, Any]] = []
        self._buffer = ""
        self._mode: Literal["detect", "tagged", "plain"] = "detect"
        self._open: list[str] = []  # the tags open now, innermost last
        self._spaces = ""  # whitespace held back: dropped at the end of a part, kept inside it
        self._part_start: int | None = None
        self._sources: list[str] = []
        self._source = ""

    # -- feeding

    def feed(self, piece: str) -> list[Event]:
        self._buffer += piece
        return self._drain(final=False)

    def end(self) -> list[Event]:
        events = self._drain(final=True)
        if self._mode == "tagged":
            events += self._close_part()
        elif self.text:
            cited = sorted(
                {int(n) for n in _MARKER.findall(self.text) if 1 <= int(n) <= len(self.references)}
            )
            refs = [self.references[n - 1] for n in cited] if cited else self.references
            start = self._part_start or 0
            events.append(self._citation(start, self.text[start:], refs))
        return events

    def _drain(self, *, final: bool) -> list[Event]:
        events: list[Event] = []
        if self._mode == "detect":
            head = self._buffer.lstrip()
            if not head or (not final and "<answer".startswith(head[:7]) and len(head) < 7):
                return events  # nothing yet, or maybe the start of the format
            self._mode = "tagged" if head.startswith("<answer") else "plain"
            self._buffer = head
        if self._mode == "plain":
            events += self._text(self._buffer)
            self._buffer = ""
            return events
        while self._buffer:
            cut = self._buffer.find("<")
            if cut < 0:
                events += self._content(self._buffer)
                self._buffer = ""
                break
            if cut:
                events += self._content(self._buffer[:cut])
                self._buffer = self._buffer[cut:]
            match = _TAG.match(self._buffer)
            if match is None:
                if not final and len(self._buffer) < _LONGEST_TAG and ">" not in self._buffer:
                    break  # perhaps a tag cut in two: wait for the rest
                events += self._content("<")  # a literal '<' in the text
                self._buffer = self._buffer[1:]
                continue
            self._buffer = self._buffer[match.end() :]
            events += self._tag(match.group(0))
        return events

    def _content(self, text: str) -> list[Event]:
        # Text inside <text>, or loose inside <answer_part> / <answer> (a model that half-follows the format).
        if self._open and self._open[-1] in ("text", "answer_part", "answer"):
            return self._text(text)
        if self._open and self._open[-1] == "source":
            self._source += text
        return []  # markup whitespace between tags

    def _tag(self, tag: str) -> list[Event]:
        name = tag.strip("</>")
        if not tag.startswith("</"):
            events = self._close_part() if name == "answer_part" else []
            if name == "source":
                self._source = ""
            self._open.append(name)
            return events
        if name in self._open:  # close it (and anything left open inside it)
            while self._open and self._open.pop() != name:
                pass
        if name == "text":
            self._spaces = ""  # the part's trailing whitespace
        elif name == "source":
            self._sources.append(self._source.strip())
        elif name in ("answer_part", "answer"):
            return self._close_part()
        return []

    def _text(self, text: str) -> list[Event]:
        """Answer text: leading whitespace of a part dropped, trailing whitespace held until more text."""
        if self._part_start is None:
            text = text.lstrip()
            if not text:
                return []
            joint = " " if self.text and not self.text[-1].isspace() else ""  # between parts, in no span
            self.text += joint
            self._part_start = len(self.text)
            out = text
        else:
            joint, out = "", self._spaces + text
        body = out.rstrip()
        self._spaces = out[len(body) :]
        self.text += body
        return [("output", {"text": joint + body})] if body else []

    def _close_part(self) -> list[Event]:
        start, sources = self._part_start, self._sources
        self._part_start, self._sources, self._spaces = None, [], ""
        if start is None:
            return []
        numbers = []
        for source in sources:
            if source.isdigit() and 1 <= int(source) <= len(self.references) and int(source) not in numbers:
                numbers.append(int(source))
        return [self._citation(start, self.text[start:], [self.references[n - 1] for n in numbers])]

    def _citation(self, start: int, text: str, refs: list[dict[str, Any]]) -> Event:
        citation = {
            "generatedResponsePart": {
                "textResponsePart": {"text": text, "span": {"start": start, "end": start + len(text) - 1}}
            },
            "retrievedReferences": refs,
        }
        self.citations.append(citation)
        return ("citation", citation)

    def parts(self) -> list[str]:
        """The answer's cited parts, in order (they cover ``text``, joined by single spaces)."""
        return [c["generatedResponsePart"]["textResponsePart"]["text"] for c in self.citations]

    def with_parts(self, parts: list[str]) -> CitedAnswer:
        """The same answer and references with each part's text replaced (a guardrail's masking), spans
        recomputed."""
        out = CitedAnswer([])
        out.references = self.references
        for citation, text in zip(self.citations, parts, strict=True):
            if out.text:
                out.text += " "
            out._citation(len(out.text), text, citation["retrievedReferences"])
            out.text += text
        return out

    @classmethod
    def uncited(cls, text: str) -> CitedAnswer:
        """An answer that cites nothing (a guardrail's blocked message)."""
        out = cls([])
        out.text = text
        return out


def answer(results: list[dict[str, Any]], generated: str) -> CitedAnswer:
    """A whole (non-streamed) answer, parsed."""
    cited = CitedAnswer(results)
    cited.feed(generated)
    cited.end()
    return cited


def stream_event(event: Event) -> tuple[str, dict[str, Any]]:
    """An event as RetrieveAndGenerateStream sends it: ``output`` {text}, or ``citation`` with the
    citation's members (and, for SDKs that read the deprecated member, the same under ``citation``)."""
    name, payload = event
    if name == "citation":
        return "citation", {**payload, "citation": payload}
    return name, payload
