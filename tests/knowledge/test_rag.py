"""RetrieveAndGenerate's pure parts (outcrop/knowledge/rag.py): the checked request, the prompt, the copy's
request, and citations parsed from what a model writes, whole or streamed."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import ValidationError

from outcrop.errors import InvalidRequestError
from outcrop.knowledge import rag

RESULTS = [
    {
        "content": {"text": "Granite is an igneous rock.", "type": "TEXT"},
        "location": {"type": "S3", "s3Location": {"uri": "s3://rocks/granite.txt"}},
        "metadata": {"kind": "igneous"},
        "score": 0.9,
    },
    {
        "content": {"text": "Shale is a sedimentary rock.", "type": "TEXT"},
        "location": {"type": "S3", "s3Location": {"uri": "s3://rocks/shale.txt"}},
        "metadata": {},
        "score": 0.5,
    },
]
TAGGED = (
    "<answer>\n<answer_part>\n<text>\nGranite is igneous.\n</text>\n<sources>\n<source>1</source>\n</sources>\n"
    "</answer_part>\n<answer_part>\n<text>\nShale is sedimentary.\n</text>\n<sources>\n<source>2</source>\n"
    "<source>1</source>\n<source>9</source>\n</sources>\n</answer_part>\n</answer>"
)


def request(**kb: Any) -> rag.RetrieveAndGenerateRequest:
    config = {"knowledgeBaseId": "KB12345678", "modelArn": "chat", **kb}
    return rag.RetrieveAndGenerateRequest.model_validate(
        {
            "input": {"text": "What is granite?"},
            "retrieveAndGenerateConfiguration": {
                "type": "KNOWLEDGE_BASE",
                "knowledgeBaseConfiguration": config,
            },
        }
    )


def spans_hold(cited: rag.CitedAnswer) -> None:
    for citation in cited.citations:
        part = citation["generatedResponsePart"]["textResponsePart"]
        assert cited.text[part["span"]["start"] : part["span"]["end"] + 1] == part["text"]


# -- the request


def test_external_sources_are_refused_with_the_fix() -> None:
    body = rag.RetrieveAndGenerateRequest.model_validate(
        {
            "input": {"text": "q"},
            "retrieveAndGenerateConfiguration": {
                "type": "EXTERNAL_SOURCES",
                "externalSourcesConfiguration": {"modelArn": "chat", "sources": []},
            },
        }
    )
    with pytest.raises(InvalidRequestError, match=r"not supported.*StartIngestionJob.*KNOWLEDGE_BASE"):
        body.knowledge_base()


@pytest.mark.parametrize(
    ("kb", "named"),
    [
        ({"orchestrationConfiguration": {}}, "orchestrationConfiguration"),
        ({"retrievalConfiguration": {"managedSearchConfiguration": {}}}, "managedSearchConfiguration"),
        (
            {
                "retrievalConfiguration": {
                    "vectorSearchConfiguration": {"rerankingConfiguration": {"type": "X"}}
                }
            },
            "rerankingConfiguration",
        ),
    ],
)
def test_what_outcrop_does_not_do_is_refused_by_name(kb: dict[str, Any], named: str) -> None:
    with pytest.raises(InvalidRequestError, match=f"{named} is not supported by Outcrop: .+"):
        request(**kb).knowledge_base()


def test_a_template_without_search_results_is_refused() -> None:
    body = request(generationConfiguration={"promptTemplate": {"textPromptTemplate": "Answer: $query$"}})
    with pytest.raises(InvalidRequestError, match=r"must contain \$search_results\$"):
        body.knowledge_base()


@pytest.mark.parametrize(
    "bad",
    [
        {"retrievalConfiguration": {"vectorSearchConfiguration": {"numberOfResults": 0}}},
        {"retrievalConfiguration": {"vectorSearchConfiguration": {"overrideSearchType": "FUZZY"}}},
        {"generationConfiguration": {"inferenceConfig": {"textInferenceConfig": {"temperature": 1.5}}}},
        {
            "generationConfiguration": {
                "inferenceConfig": {"textInferenceConfig": {"stopSequences": ["a"] * 5}}
            }
        },
        {"knowledgeBaseId": "not-an-id!"},
    ],
)
def test_values_outside_the_service_models_bounds_fail_validation(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        request(**bad)


# -- retrieval through the seam


class FakeRetriever:
    def __init__(self, results: list[dict[str, Any]]) -> None:
        self.results = results
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    async def retrieve(
        self,
        knowledge_base_id: str,
        text: str,
        *,
        number_of_results: int = 5,
        search_type: str | None = None,
        filter: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        self.calls.append(
            (knowledge_base_id, text, {"n": number_of_results, "type": search_type, "filter": filter})
        )
        return self.results[:number_of_results]


def test_retrieval_passes_the_vector_search_configuration_through() -> None:
    retriever = FakeRetriever(RESULTS)
    where = {"equals": {"key": "kind", "value": "igneous"}}
    kb = request(
        retrievalConfiguration={
            "vectorSearchConfiguration": {
                "numberOfResults": 1,
                "overrideSearchType": "HYBRID",
                "filter": where,
            }
        }
    ).knowledge_base()
    got = asyncio.run(rag.retrieve(retriever, kb, "granite"))
    assert got == RESULTS[:1]
    assert retriever.calls == [("KB12345678", "granite", {"n": 1, "type": "HYBRID", "filter": where})]
    asyncio.run(rag.retrieve(retriever, request().knowledge_base(), "granite"))
    assert retriever.calls[-1][2] == {"n": 5, "type": None, "filter": None}


# -- the prompt and the copy's request


def test_the_default_template_puts_numbered_results_and_format_in_the_system_text() -> None:
    prompt = rag.build_prompt(None, "What is granite?", RESULTS)
    assert prompt.user == "What is granite?"
    assert prompt.system is not None
    assert "<source>1</source>\n<content>\nGranite is an igneous rock." in prompt.system
    assert "<source>2</source>" in prompt.system and "<answer_part>" in prompt.system


def test_a_template_with_query_is_the_user_turn_and_placeholders_in_chunks_stay_literal() -> None:
    results = [{"content": {"text": "literally $query$"}}]
    prompt = rag.build_prompt("Q: $query$\nR: $search_results$\nT: $current_time$", "why?", results)
    assert prompt.system is None
    assert prompt.user.startswith("Q: why?\nR: <search_results>")
    assert "literally $query$" in prompt.user and "$current_time$" not in prompt.user


def test_the_copy_request_is_a_converse_style_chat_with_history_and_inference_config() -> None:
    generation = rag.GenerationConfiguration.model_validate(
        {
            "inferenceConfig": {
                "textInferenceConfig": {
                    "maxTokens": 20,
                    "temperature": 0,
                    "topP": 0.5,
                    "stopSequences": ["END"],
                }
            },
            "additionalModelRequestFields": {"top_k": 3},
        }
    )
    path, body = rag.copy_request(rag.Prompt("SYS", "now?"), [("before?", "yes")], generation, chat=True)
    assert path == "/v1/chat/completions"
    assert body["messages"] == [
        {"role": "system", "content": "SYS"},
        {"role": "user", "content": "before?"},
        {"role": "assistant", "content": "yes"},
        {"role": "user", "content": "now?"},
    ]
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["stop"], body["top_k"]) == (
        20,
        0.0,
        0.5,
        ["END"],
        3,
    )


def test_a_model_without_chat_template_gets_a_completion_with_the_turns_written_out() -> None:
    path, body = rag.copy_request(rag.Prompt("SYS", "now?"), [("before?", "yes")], None, chat=False)
    assert path == "/v1/completions" and "messages" not in body
    assert body["prompt"] == "SYS\n\nUser: before?\nAssistant: yes\nUser: now?\nAssistant:"


# -- citations


def test_a_tagged_answer_becomes_text_and_one_citation_per_part() -> None:
    cited = rag.answer(RESULTS, TAGGED)
    assert cited.text == "Granite is igneous. Shale is sedimentary."
    assert [c["generatedResponsePart"]["textResponsePart"]["text"] for c in cited.citations] == [
        "Granite is igneous.",
        "Shale is sedimentary.",
    ]
    first, second = cited.citations
    assert first["generatedResponsePart"]["textResponsePart"]["span"] == {"start": 0, "end": 18}
    assert first["retrievedReferences"] == [
        {
            "content": {"text": "Granite is an igneous rock.", "type": "TEXT"},
            "location": {"type": "S3", "s3Location": {"uri": "s3://rocks/granite.txt"}},
            "metadata": {"kind": "igneous"},
        }
    ]
    # Source 9 does not exist: dropped; empty metadata is left out (the shape's map has min 1).
    assert [r["location"]["s3Location"]["uri"] for r in second["retrievedReferences"]] == [
        "s3://rocks/shale.txt",
        "s3://rocks/granite.txt",
    ]
    assert "metadata" not in second["retrievedReferences"][0]
    spans_hold(cited)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
def test_streaming_in_any_pieces_gives_the_same_answer_and_events(size: int) -> None:
    whole = rag.answer(RESULTS, TAGGED)
    cited = rag.CitedAnswer(RESULTS)
    events = []
    for i in range(0, len(TAGGED), size):
        events += cited.feed(TAGGED[i : i + size])
    events += cited.end()
    assert cited.text == whole.text and cited.citations == whole.citations
    assert "".join(e[1]["text"] for e in events if e[0] == "output") == whole.text
    assert [e[1] for e in events if e[0] == "citation"] == whole.citations
    # The first citation is known before the second part's text arrives.
    kinds = [e[0] for e in events]
    assert kinds.index("citation") < len(kinds) - 1 - kinds[::-1].index("output")


def test_untagged_text_is_one_citation_over_every_retrieved_result() -> None:
    cited = rag.answer(RESULTS, "  \n random tokens < and > more  \n")
    assert cited.text == "random tokens < and > more"
    (only,) = cited.citations
    assert only["generatedResponsePart"]["textResponsePart"] == {
        "text": cited.text,
        "span": {"start": 0, "end": len(cited.text) - 1},
    }
    assert len(only["retrievedReferences"]) == 2


def test_untagged_text_with_markers_cites_only_the_marked_results() -> None:
    cited = rag.answer(RESULTS, "Shale is sedimentary [2].")
    assert [r["location"]["s3Location"]["uri"] for r in cited.citations[0]["retrievedReferences"]] == [
        "s3://rocks/shale.txt"
    ]


def test_no_text_no_citations_and_no_results_no_references() -> None:
    assert rag.answer(RESULTS, "   ").citations == []
    cited = rag.answer([], "I could not find an exact answer.")
    assert cited.citations[0]["retrievedReferences"] == []


def test_a_half_closed_tagged_answer_still_cites_its_part() -> None:
    cited = rag.answer(RESULTS, "<answer><answer_part><text>Granite <b>is</b> igneous")
    assert cited.text == "Granite <b>is</b> igneous"
    assert cited.citations[0]["retrievedReferences"] == []
    spans_hold(cited)


def test_stream_citation_events_carry_the_deprecated_member_too() -> None:
    name, payload = rag.stream_event(("citation", {"generatedResponsePart": {}, "retrievedReferences": []}))
    assert name == "citation" and payload["citation"] == {
        "generatedResponsePart": {},
        "retrievedReferences": [],
    }


def test_masked_parts_keep_their_references_with_new_spans() -> None:
    cited = rag.answer(RESULTS, TAGGED)
    masked = cited.with_parts(["Granite is {ROCK}.", "Shale is sedimentary."])
    assert masked.text == "Granite is {ROCK}. Shale is sedimentary."
    assert [c["retrievedReferences"] for c in masked.citations] == [
        c["retrievedReferences"] for c in cited.citations
    ]
    spans_hold(masked)
    assert rag.CitedAnswer.uncited("Blocked.").citations == []
