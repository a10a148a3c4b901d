"""Detectors, table-tested: PII entity types (Presidio's recognizers and our own patterns), words, topics."""

from __future__ import annotations

import pytest

from outcrop.guardrails import detectors


@pytest.mark.parametrize(
    ("kind", "text", "found"),
    [
        ("EMAIL", "write to jane.doe@example.com today", "jane.doe@example.com"),
        ("PHONE", "call (206) 555-0100 or later", "(206) 555-0100"),
        ("PHONE", "call +44 20 7946 0958 now", "+44 20 7946 0958"),
        ("CREDIT_DEBIT_CARD_NUMBER", "card 4111 1111 1111 1111 expires", "4111 1111 1111 1111"),
        ("US_SOCIAL_SECURITY_NUMBER", "ssn 536-22-8726", "536-22-8726"),
        ("IP_ADDRESS", "from 192.168.10.20 yesterday", "192.168.10.20"),
        ("URL", "see https://example.org/docs?a=1.", "https://example.org/docs?a=1"),
        ("AWS_ACCESS_KEY", "key AKIAIOSFODNN7EXAMPLE here", "AKIAIOSFODNN7EXAMPLE"),
        (
            "AWS_SECRET_KEY",
            "secret wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY ok",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        ),
        ("PASSWORD", "my password is hunter22 ok", "hunter22"),
        ("PASSWORD", "pwd=S3cret!", "S3cret!"),
        ("NAME", "Hi, my name is Jane Smith.", "Jane Smith"),
        ("NAME", "Ask Dr. Gregory House", "Gregory House"),
        (
            "ADDRESS",
            "ship to 123 Main Street, Springfield, IL 62704 asap",
            "123 Main Street, Springfield, IL 62704",
        ),
        ("AGE", "she is 42 years old", "42"),
        (
            "INTERNATIONAL_BANK_ACCOUNT_NUMBER",
            "IBAN GB82 WEST 1234 5698 7654 32",
            "GB82 WEST 1234 5698 7654 32",
        ),
        ("MAC_ADDRESS", "device 00:1A:2B:3C:4D:5E online", "00:1A:2B:3C:4D:5E"),
        ("CREDIT_DEBIT_CARD_CVV", "cvv: 123", "123"),
        ("CREDIT_DEBIT_CARD_EXPIRY", "expiry 09/27", "09/27"),
        ("PIN", "my pin is 4321", "4321"),
        ("SWIFT_CODE", "SWIFT code DEUTDEFF500", "DEUTDEFF500"),
        ("USERNAME", "username: jdoe42", "jdoe42"),
    ],
)
def test_each_entity_type_is_found(kind: str, text: str, found: str) -> None:
    spans = detectors.non_overlapping(detectors.find_pii(text, [kind]))
    assert [s.match for s in spans] == [found]
    assert all(s.kind == kind for s in spans)


@pytest.mark.parametrize(
    ("kind", "text"),
    [
        ("CREDIT_DEBIT_CARD_NUMBER", "order 4111 1111 1111 1112"),  # fails Luhn
        ("EMAIL", "not an email: jane@localhost"),
        ("SWIFT_CODE", "ABCDEFGH without context"),
        ("AWS_SECRET_KEY", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
        ("NAME", "I am Happy Today"),
        ("PHONE", "version 1.2.3 released in 2026"),
    ],
)
def test_look_alikes_are_not_found(kind: str, text: str) -> None:
    assert detectors.find_pii(text, [kind]) == []


def test_every_supported_type_is_a_bedrock_entity_type() -> None:
    import botocore.session

    model = botocore.session.get_session().get_service_model("bedrock")
    assert set(model.shape_for("GuardrailPiiEntityType").enum) >= detectors.SUPPORTED_PII_TYPES


def test_overlapping_findings_keep_the_longer() -> None:
    spans = [
        detectors.Span(0, 10, "A", "x"),
        detectors.Span(2, 5, "B", "y"),
        detectors.Span(10, 12, "C", "z"),
    ]
    assert [s.kind for s in detectors.non_overlapping(spans)] == ["A", "C"]


def test_words_and_phrases_match_whole_words_case_insensitively() -> None:
    matcher = detectors.WordMatcher()
    matcher.add("Project Zephyr", "p")
    matcher.add("ass", "w")
    found = matcher.find("About PROJECT   zephyr: assess the class, not the ass.")
    assert [(s.kind, s.match) for s in found] == [("p", "PROJECT   zephyr"), ("w", "ass")]
    assert [s.match for s in detectors.profanity_matcher().find("What the Fuck, Scunthorpe")] == ["Fuck"]


def test_topics_are_detected_by_shared_terms_and_explained() -> None:
    classifier = detectors.TopicClassifier(
        [
            {
                "name": "Investment advice",
                "definition": "Recommendations about investing money in stocks, bonds or mutual funds.",
                "examples": ["Which stocks should I buy?", "Is it a good time to invest in bonds?"],
            }
        ]
    )
    (hit,) = classifier.classify("Hi! Which stock should I be buying for retirement?")
    assert hit.name == "Investment advice" and hit.method == "lexical-overlap-v1"
    assert hit.matched_terms == ["buy", "stock"] and hit.score >= detectors.EXAMPLE_COVERAGE
    assert classifier.classify("Can you give me some investment advice?")[0].matched_terms == [
        "advice",
        "invest",
    ]
    assert classifier.classify("What is the weather in Paris?") == []
    assert classifier.classify("I bought a new stock pot for soup.") == []
