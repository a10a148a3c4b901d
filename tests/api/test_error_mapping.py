"""Every error class of outcrop.errors maps to a Bedrock exception botocore knows and to an OpenAI error."""

from __future__ import annotations

import gzip
import json
import os

import botocore
import pytest

from outcrop import errors
from outcrop.api.bedrock.errors import BEDROCK_ERRORS, bedrock_error
from outcrop.api.openai.errors import OPENAI_ERRORS, openai_error


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


# Errors every AWS JSON service answers that no service model lists (authentication of the request).
COMMON_AWS_ERRORS = {"InvalidSignatureException": 403, "UnrecognizedClientException": 403}
BOTOCORE_EXCEPTIONS = {**_botocore_exceptions(), **COMMON_AWS_ERRORS}


@pytest.mark.parametrize("cls", errors.all_error_classes(), ids=lambda c: c.__name__)
def test_every_error_class_is_mapped_explicitly_in_both_dialects(cls: type[errors.OutcropError]) -> None:
    assert cls in BEDROCK_ERRORS, f"add {cls.__name__} to BEDROCK_ERRORS"
    assert cls in OPENAI_ERRORS, f"add {cls.__name__} to OPENAI_ERRORS"


@pytest.mark.parametrize("cls", errors.all_error_classes(), ids=lambda c: c.__name__)
def test_bedrock_names_and_statuses_are_the_service_models(cls: type[errors.OutcropError]) -> None:
    name, status = BEDROCK_ERRORS[cls]
    assert name in BOTOCORE_EXCEPTIONS, f"{name} is not an exception of the bedrock service models"
    assert BOTOCORE_EXCEPTIONS[name] == status


def test_every_class_documents_when_it_is_raised() -> None:
    for cls in errors.all_error_classes():
        assert (cls.__doc__ and "Raised" in cls.__doc__) or cls is errors.OutcropError, cls.__name__


def test_subclass_resolution_uses_the_nearest_mapping() -> None:
    class Custom(errors.NotFoundError):
        pass

    assert bedrock_error(Custom("Model", "x"))[0] == "ResourceNotFoundException"
    assert openai_error(Custom("Model", "x"))[1] == 404


def test_retryable_errors_are_the_ones_a_client_should_retry() -> None:
    assert errors.ModelNotReadyError("m").retryable
    assert errors.ThrottlingError("slow down").retryable
    assert not errors.InvalidRequestError("bad").retryable
