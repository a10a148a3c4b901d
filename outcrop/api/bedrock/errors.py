"""Translate OutcropError into Bedrock's wire error: status + ``x-amzn-ErrorType`` + ``{"message"}``.

botocore reads the code from the ``x-amzn-ErrorType`` header and raises
``client.exceptions.<Name>`` (each operation's errors are listed in botocore's service model,
``botocore/data/bedrock*/*/service-2.json.gz``).
"""

from __future__ import annotations

from fastapi.responses import JSONResponse

from outcrop import errors

# class -> (Bedrock exception name, HTTP status). Subclasses not listed use their parent's entry;
# tests/api/test_error_mapping.py asserts every class resolves and that names exist in botocore.
BEDROCK_ERRORS: dict[type[errors.OutcropError], tuple[str, int]] = {
    errors.OutcropError: ("InternalServerException", 500),
    errors.InvalidRequestError: ("ValidationException", 400),
    errors.ContextLengthError: ("ValidationException", 400),
    errors.ModelNotChatCapableError: ("ValidationException", 400),
    errors.ModelValidationError: ("ValidationException", 400),
    errors.NotFoundError: ("ResourceNotFoundException", 404),
    errors.ConflictError: ("ConflictException", 400),
    errors.QuotaExceededError: ("ServiceQuotaExceededException", 400),
    errors.AuthenticationError: ("AccessDeniedException", 403),
    errors.AccessDeniedError: ("AccessDeniedException", 403),
    errors.ThrottlingError: ("ThrottlingException", 429),
    errors.ModelNotReadyError: ("ModelNotReadyException", 429),
    errors.ModelTimeoutError: ("ModelTimeoutException", 408),
    errors.ModelFailedError: ("ModelErrorException", 424),
    errors.ServiceUnavailableError: ("ServiceUnavailableException", 503),
    errors.ConfigError: ("InternalServerException", 500),
    errors.InternalError: ("InternalServerException", 500),
}


def bedrock_error(exc: errors.OutcropError) -> tuple[str, int]:
    for cls in type(exc).__mro__:
        if cls in BEDROCK_ERRORS:
            return BEDROCK_ERRORS[cls]  # type: ignore[index]
    return BEDROCK_ERRORS[errors.OutcropError]


def bedrock_error_response(exc: errors.OutcropError, request_id: str) -> JSONResponse:
    name, status = bedrock_error(exc)
    body: dict[str, object] = {"message": exc.message}
    headers = {"x-amzn-ErrorType": f"{name}:", "x-amzn-RequestId": request_id}
    retry_after = getattr(exc, "retry_after_seconds", None)
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, round(retry_after)))
    if isinstance(exc, errors.ModelFailedError):
        body["originalStatusCode"] = exc.original_status_code
        body["resourceName"] = exc.model_id
    return JSONResponse(body, status_code=status, headers=headers)
