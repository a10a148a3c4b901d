"""Every error class carries its wire facts, and every surface reads them from the class.

The surfaces: the Bedrock gateway, the OpenAI gateway, the copy's worker (OpenAI's error
object) and batch records (Bedrock's errorCode). A class added later (say a new
AuthenticationError) inherits its parent's facts, so it is mapped the moment it exists.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Callable
from typing import Any

import botocore
import pytest

from outcrop import errors
from outcrop.api.bedrock.errors import bedrock_error, bedrock_error_response
from outcrop.api.openai.errors import openai_error, openai_error_response
from outcrop.batch.records import error_code
from outcrop.engine.server import error_response as worker_error_response


def _botocore_exceptions() -> dict[str, int]:
    root = os.path.join(os.path.dirname(botocore.__file__), "data")
    found: dict[str, int] = {}
    for service, version in (("bedrock", "2023-04-20"), ("bedrock-runtime", "2023-09-30")):
        with gzip.open(os.path.join(root, service, version, "service-2.json.gz")) as fh:
            shapes = json.load(fh)["shapes"]
        for name, shape in shapes.items():
            if shape.get("exception"):
                found[name] = shape["error"]["httpStatusCode"]
    return found


# Errors every AWS service answers without listing them in its model (the signature checks).
COMMON_AWS_EXCEPTIONS = {"InvalidSignatureException": 403, "UnrecognizedClientException": 403}
BOTOCORE_EXCEPTIONS = {**_botocore_exceptions(), **COMMON_AWS_EXCEPTIONS}
# The error types of OpenAI's API (and the SDK's status-code classes they come with).
OPENAI_TYPES = {
    "invalid_request_error",
    "authentication_error",
    "permission_error",
    "not_found_error",
    "rate_limit_error",
    "insufficient_quota",
    "timeout_error",
    "server_error",
}

# Classes whose constructor takes more than a message.
EXAMPLES: dict[type[errors.OutcropError], Callable[[], errors.OutcropError]] = {
    errors.ContextLengthError: lambda: errors.ContextLengthError(
        prompt_tokens=30, max_tokens=10, context_length=32
    ),
    errors.ModelNotChatCapableError: lambda: errors.ModelNotChatCapableError("m"),
    errors.ModelValidationError: lambda: errors.ModelValidationError(["config.json: missing"]),
    errors.NotFoundError: lambda: errors.NotFoundError("Model", "m"),
    errors.QuotaExceededError: lambda: errors.QuotaExceededError("full", quota="models", limit=1),
    errors.ModelNotReadyError: lambda: errors.ModelNotReadyError("m", retry_after_seconds=2.4),
    errors.ModelFailedError: lambda: errors.ModelFailedError(
        "crashed", original_status_code=500, model_id="m"
    ),
}


def example(cls: type[errors.OutcropError]) -> errors.OutcropError:
    return EXAMPLES[cls]() if cls in EXAMPLES else cls(f"an example {cls.__name__}")


CLASSES = errors.all_error_classes()


def _ids(cls: type) -> str:
    return cls.__name__


@pytest.mark.parametrize("cls", CLASSES, ids=_ids)
def test_every_class_names_a_bedrock_exception_of_the_service_models_with_its_status(
    cls: type[errors.OutcropError],
) -> None:
    assert cls.bedrock_name in BOTOCORE_EXCEPTIONS, f"{cls.bedrock_name} is not a Bedrock exception"
    assert BOTOCORE_EXCEPTIONS[cls.bedrock_name] == cls.bedrock_status


@pytest.mark.parametrize("cls", CLASSES, ids=_ids)
def test_every_class_names_an_openai_error_type(cls: type[errors.OutcropError]) -> None:
    assert cls.openai_type in OPENAI_TYPES
    assert (cls.openai_status >= 500) == (cls.openai_type in ("server_error", "timeout_error"))


@pytest.mark.parametrize("cls", CLASSES, ids=_ids)
def test_the_bedrock_gateway_answers_with_the_classes_name_status_and_message(
    cls: type[errors.OutcropError],
) -> None:
    exc = example(cls)
    response = bedrock_error_response(exc, "req-1")
    assert response.status_code == cls.bedrock_status
    assert response.headers["x-amzn-ErrorType"] == f"{cls.bedrock_name}:"
    assert json.loads(bytes(response.body))["message"] == exc.message
    assert bedrock_error(exc) == (cls.bedrock_name, cls.bedrock_status)


@pytest.mark.parametrize("cls", CLASSES, ids=_ids)
def test_the_openai_gateway_and_the_worker_answer_the_same_error_object(
    cls: type[errors.OutcropError],
) -> None:
    exc = example(cls)
    gateway, worker = openai_error_response(exc, "req-1"), worker_error_response(exc)
    assert gateway.status_code == worker.status_code == cls.openai_status
    body = json.loads(bytes(gateway.body))
    assert body == json.loads(bytes(worker.body))
    assert body["error"]["type"] == cls.openai_type and body["error"]["code"] == cls.openai_code
    assert body["error"]["message"] == exc.message
    assert openai_error(exc) == (cls.openai_type, cls.openai_status, cls.openai_code)


@pytest.mark.parametrize("cls", CLASSES, ids=_ids)
def test_a_batch_record_reports_the_status_bedrock_would_have_answered(
    cls: type[errors.OutcropError],
) -> None:
    assert error_code(example(cls)) == cls.bedrock_status


@pytest.mark.parametrize("cls", CLASSES, ids=_ids)
def test_retry_after_is_sent_by_every_surface_exactly_when_the_error_carries_a_pause(
    cls: type[errors.OutcropError],
) -> None:
    exc = example(cls)
    pause = getattr(exc, "retry_after_seconds", None)
    expected = {"Retry-After": str(max(1, round(pause)))} if pause is not None else {}
    assert errors.retry_after_headers(exc) == expected
    for response in (
        bedrock_error_response(exc, "r"),
        openai_error_response(exc, "r"),
        worker_error_response(exc),
    ):
        assert response.headers.get("Retry-After") == expected.get("Retry-After")


@pytest.mark.parametrize(("seconds", "header"), [(0.0, "1"), (0.4, "1"), (2.4, "2"), (2.6, "3"), (30, "30")])
def test_retry_after_is_whole_seconds_and_never_zero(seconds: float, header: str) -> None:
    exc = errors.ThrottlingError("slow down", retry_after_seconds=seconds)
    assert errors.retry_after_headers(exc) == {"Retry-After": header}


def test_a_code_relayed_from_a_copy_wins_over_the_classes_default() -> None:
    exc = errors.InvalidRequestError("too long", param="max_tokens", code="context_length_exceeded")
    body: dict[str, Any] = errors.openai_error_body(exc)
    assert body["error"]["code"] == "context_length_exceeded" and body["error"]["param"] == "max_tokens"


def test_a_subclass_without_facts_of_its_own_inherits_its_parents() -> None:
    class Custom(errors.NotFoundError):
        """Raised in this test only."""

    assert bedrock_error(Custom("Model", "x")) == ("ResourceNotFoundException", 404)
    assert openai_error(Custom("Model", "x"))[1] == 404


def test_every_class_documents_when_it_is_raised() -> None:
    for cls in CLASSES:
        assert (cls.__doc__ and "Raised" in cls.__doc__) or cls is errors.OutcropError, cls.__name__


@pytest.mark.parametrize(
    ("cls", "retryable"),
    [
        (errors.InvalidRequestError, False),
        (errors.ContextLengthError, False),
        (errors.NotFoundError, False),
        (errors.ConflictError, False),
        (errors.QuotaExceededError, False),
        (errors.AuthenticationError, False),
        (errors.AccessDeniedError, False),
        (errors.ThrottlingError, True),
        (errors.ModelNotReadyError, True),
        (errors.ModelTimeoutError, True),
        (errors.ModelFailedError, True),
        (errors.ServiceUnavailableError, True),
        (errors.InternalError, False),
    ],
)
def test_retryable_errors_are_the_ones_a_client_should_retry(
    cls: type[errors.OutcropError], retryable: bool
) -> None:
    assert cls.retryable is retryable
