"""Every error class maps to a SageMaker error; runtime names are the ones botocore models or retries."""

from __future__ import annotations

import botocore.session
import pytest

from outcrop.api.sagemaker.errors import control_error, runtime_error
from outcrop.errors import all_error_classes

# Codes botocore knows without a model entry: its retry handler's throttling codes and AWS's auth errors.
GENERIC_CODES = {
    "ThrottlingException",
    "UnrecognizedClientException",
    "AccessDeniedException",
    "ValidationException",
}


@pytest.mark.parametrize("cls", all_error_classes(), ids=lambda c: c.__name__)
def test_every_error_class_has_a_sagemaker_name_and_status(cls: type) -> None:
    exc = cls.__new__(cls)
    exc.message = "x"
    for name, status in (control_error(exc), runtime_error(exc)):
        assert name and 400 <= status < 600


def test_runtime_error_names_exist_in_the_service_model() -> None:
    model = botocore.session.get_session().get_service_model("sagemaker-runtime")
    modelled = {shape for shape in model.shape_names if model.shape_for(shape).metadata.get("exception")}
    names = {runtime_error(cls.__new__(cls))[0] for cls in all_error_classes()}
    assert names - modelled <= GENERIC_CODES
