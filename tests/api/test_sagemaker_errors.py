"""Every error class carries SageMaker's wire facts (names and statuses as class attributes, no second
table); the runtime's names are the ones botocore models or retries, the control plane's are SageMaker's."""

from __future__ import annotations

import botocore.session
import pytest

from outcrop import errors
from outcrop.api.sagemaker.errors import control_error, runtime_error
from outcrop.errors import all_error_classes

# Codes botocore knows without a model entry: its retry handler's throttling codes and AWS's auth errors.
GENERIC_CODES = {
    "ThrottlingException",
    "UnrecognizedClientException",
    "AccessDeniedException",
    "ValidationException",
    "InternalFailure",
    "ServiceUnavailable",
}


def bare(cls: type[errors.OutcropError]) -> errors.OutcropError:
    exc = cls.__new__(cls)
    exc.message = "x"
    exc.fields = {}
    return exc


@pytest.mark.parametrize("cls", all_error_classes(), ids=lambda c: c.__name__)
def test_every_error_class_has_a_sagemaker_name_and_status(cls: type[errors.OutcropError]) -> None:
    for name, status in (control_error(bare(cls)), runtime_error(bare(cls))):
        assert name and 400 <= status < 600
    assert control_error(bare(cls)) == (cls.sagemaker_name, cls.sagemaker_status)
    assert runtime_error(bare(cls)) == (cls.sagemaker_runtime_name, cls.sagemaker_runtime_status)


def test_runtime_error_names_exist_in_the_service_model() -> None:
    model = botocore.session.get_session().get_service_model("sagemaker-runtime")
    modelled = {shape for shape in model.shape_names if model.shape_for(shape).metadata.get("exception")}
    names = {cls.sagemaker_runtime_name for cls in all_error_classes()}
    assert names - modelled <= GENERIC_CODES


def test_control_plane_error_names_are_sagemakers() -> None:
    model = botocore.session.get_session().get_service_model("sagemaker")
    modelled = {shape for shape in model.shape_names if model.shape_for(shape).metadata.get("exception")}
    names = {cls.sagemaker_name for cls in all_error_classes()}
    assert names - modelled <= GENERIC_CODES


@pytest.mark.parametrize(
    ("cls", "control", "runtime"),
    [
        (errors.InvalidRequestError, ("ValidationException", 400), ("ValidationError", 400)),
        (errors.ContextLengthError, ("ValidationException", 400), ("ValidationError", 400)),
        (errors.NotFoundError, ("ValidationException", 400), ("ValidationError", 400)),
        (errors.ConflictError, ("ResourceInUse", 400), ("ValidationError", 400)),
        (errors.AccessDeniedError, ("AccessDeniedException", 400), ("AccessDeniedException", 403)),
        (
            errors.InvalidSignatureError,
            ("UnrecognizedClientException", 403),
            ("UnrecognizedClientException", 403),
        ),
        (errors.ModelNotReadyError, ("ThrottlingException", 400), ("ModelNotReadyException", 429)),
        (errors.ModelFailedError, ("InternalFailure", 500), ("ModelError", 424)),
        (errors.ModelTimeoutError, ("InternalFailure", 500), ("ModelError", 424)),
        (errors.ServiceUnavailableError, ("ServiceUnavailable", 503), ("ServiceUnavailable", 503)),
        (errors.InternalError, ("InternalFailure", 500), ("InternalFailure", 500)),
    ],
)
def test_sagemakers_names_and_statuses(
    cls: type[errors.OutcropError], control: tuple[str, int], runtime: tuple[str, int]
) -> None:
    assert (cls.sagemaker_name, cls.sagemaker_status) == control
    assert (cls.sagemaker_runtime_name, cls.sagemaker_runtime_status) == runtime


def test_a_retry_after_travels_in_the_header() -> None:
    from outcrop.api.sagemaker.errors import runtime_error_response

    response = runtime_error_response(errors.ModelNotReadyError("m", retry_after_seconds=2.4), "rid")
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "2"
    assert response.headers["x-amzn-ErrorType"] == "ModelNotReadyException:"
