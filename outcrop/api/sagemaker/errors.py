"""Translate OutcropError into SageMaker's wire errors (control plane and runtime).

Control plane (JSON 1.1): status + ``{"__type": Name, "message"}`` + ``x-amzn-ErrorType``; botocore's
JSON parser reads the code from ``__type``. Unknown resources are ``ValidationException`` there
("Could not find endpoint ..."), as SageMaker answers.

Runtime (REST-JSON): status + ``x-amzn-ErrorType`` + ``{"Message"}``; botocore raises
``client.exceptions.<Name>`` and fills the modelled members (``ModelError``'s ``OriginalStatusCode``,
``OriginalMessage``) from the body.

The names and statuses are wire facts of each error class (``outcrop/errors.py``); this module only
writes them in SageMaker's two shapes.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

from outcrop import errors

JSON_11 = "application/x-amz-json-1.1"


def control_error(exc: errors.OutcropError) -> tuple[str, int]:
    """The control plane's exception name and status: the class's ``sagemaker_name``/``sagemaker_status``."""
    return exc.sagemaker_name, exc.sagemaker_status


def runtime_error(exc: errors.OutcropError) -> tuple[str, int]:
    """The runtime's: the class's ``sagemaker_runtime_name``/``sagemaker_runtime_status``."""
    return exc.sagemaker_runtime_name, exc.sagemaker_runtime_status


def _headers(name: str, request_id: str, exc: errors.OutcropError) -> dict[str, str]:
    return {"x-amzn-ErrorType": f"{name}:", "x-amzn-RequestId": request_id, **errors.retry_after_headers(exc)}


def control_error_response(exc: errors.OutcropError, request_id: str) -> JSONResponse:
    name, status = control_error(exc)
    return JSONResponse(
        {"__type": name, "message": exc.message},
        status_code=status,
        headers=_headers(name, request_id, exc),
        media_type=JSON_11,
    )


def runtime_error_response(exc: errors.OutcropError, request_id: str) -> JSONResponse:
    name, status = runtime_error(exc)
    body: dict[str, Any] = {"Message": exc.message}
    if name == "ModelError":
        original = getattr(
            exc, "original_status_code", 408 if isinstance(exc, errors.ModelTimeoutError) else 500
        )
        body["OriginalStatusCode"] = original
        body["OriginalMessage"] = exc.message
    return JSONResponse(body, status_code=status, headers=_headers(name, request_id, exc))
