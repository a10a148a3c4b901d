"""Outcrop's one exception tree, and the one table of how each error looks on the wire.

Every error a user can see is an ``OutcropError`` subclass (the bare base is never raised:
tests/test_errors.py scans the package for it). Each class carries its wire facts as class
attributes, and a subclass that sets none inherits its parent's:

- ``bedrock_name`` / ``bedrock_status``: the ``x-amzn-ErrorType`` and HTTP status of the
  Bedrock service models (botocore's ``service-2.json``), used by the Bedrock gateway
  (``outcrop.api.bedrock.errors``) and by batch records' ``errorCode``;
- ``openai_type`` / ``openai_status`` / ``openai_code``: OpenAI's error object, used by the
  OpenAI gateway (``outcrop.api.openai.errors``) and by the copy's worker
  (``outcrop.engine.server``), through :func:`openai_error_body`;
- ``sagemaker_name`` / ``sagemaker_status``: SageMaker's control plane (JSON 1.1 ``__type``),
  and ``sagemaker_runtime_name`` / ``sagemaker_runtime_status``: SageMaker's runtime
  (``x-amzn-ErrorType``), used by the SageMaker gateway (``outcrop.api.sagemaker.errors``);
- ``retryable``: whether the same request sent again later can succeed; the batch runner's
  retries read it, nothing else decides.

:func:`retry_after_headers` is the one place a ``Retry-After`` header is written. The CLI
prints an error's message in one red line.

    OutcropError                      retryable?
    ├── InvalidRequestError           no    the request or its input is malformed
    │   ├── ContextLengthError        no    prompt + max_tokens exceed the model's context
    │   ├── ModelNotChatCapableError  no    chat/converse on a model without a chat template
    │   └── WrongModelKindError       no    text generation on an embedding model, or the reverse
    ├── ModelValidationError          no    an imported folder failed validation (all problems listed)
    ├── NotFoundError                 no    a job, model or copy does not exist
    ├── ConflictError                 no    a name is taken, or the resource is busy
    ├── QuotaExceededError            no    a configured quota is full
    ├── AuthenticationError           no    no or bad credentials
    │   ├── InvalidSignatureError     no    a SigV4 signature, scope or date that does not check out
    │   └── UnrecognizedClientError   no    an unknown access key id
    ├── AccessDeniedError             no    credentials are fine but not allowed to do this
    ├── ThrottlingError               yes   a per-principal rate limit was hit
    ├── ModelNotReadyError            yes   no copy is ready yet; one is starting
    ├── ModelTimeoutError             yes   the model did not answer before the deadline
    ├── ModelFailedError              maybe the copy failed while answering
    ├── ServiceUnavailableError       yes   overloaded, or no room to start a copy
    ├── ConfigError                   no    Outcrop's own configuration is invalid
    └── InternalError                 maybe a bug: please report it
"""

from __future__ import annotations

from typing import Any, ClassVar


class OutcropWarning(UserWarning):
    """Warnings raised by Outcrop itself (pytest turns them into errors)."""


class OutcropError(Exception):
    """Base of every error Outcrop shows to a user.

    ``message`` says what was wrong and how to fix it; ``retryable`` says whether
    sending the same request again later can succeed.
    """

    retryable: ClassVar[bool] = False
    # Bedrock: the exception's name in the service models and its HTTP status.
    bedrock_name: ClassVar[str] = "InternalServerException"
    bedrock_status: ClassVar[int] = 500
    # OpenAI: the error object's ``type``, the HTTP status and the default ``code``.
    openai_type: ClassVar[str] = "server_error"
    openai_status: ClassVar[int] = 500
    openai_code: ClassVar[str | None] = None
    # SageMaker: the control plane's and the runtime's exception names and HTTP statuses. SageMaker
    # answers most client errors as 400 (even AccessDenied and Throttling on the control plane).
    sagemaker_name: ClassVar[str] = "InternalFailure"
    sagemaker_status: ClassVar[int] = 500
    sagemaker_runtime_name: ClassVar[str] = "InternalFailure"
    sagemaker_runtime_status: ClassVar[int] = 500

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields

    def __str__(self) -> str:
        return self.message


class InvalidRequestError(OutcropError):
    """Raised when a request, a parameter or an input file is malformed. Retrying does not help."""

    bedrock_name = "ValidationException"
    bedrock_status = 400
    openai_type = "invalid_request_error"
    openai_status = 400
    sagemaker_name = "ValidationException"
    sagemaker_status = 400
    sagemaker_runtime_name = "ValidationError"
    sagemaker_runtime_status = 400

    def __init__(self, message: str, *, param: str | None = None, **fields: Any) -> None:
        super().__init__(message, param=param, **fields)
        self.param = param


class ContextLengthError(InvalidRequestError):
    """Raised when prompt tokens + max_tokens exceed the model's context length."""

    openai_code = "context_length_exceeded"

    def __init__(
        self, *, prompt_tokens: int, max_tokens: int, context_length: int, at_least: bool = False
    ) -> None:
        # at_least: prompt_tokens is a lower bound from the prompt's length, found without tokenizing.
        # The first sentence is OpenAI's and vLLM's, word for word: clients (LiteLLM's
        # ContextWindowExceededError and its fallbacks) recognise the error by it.
        super().__init__(
            f"This model's maximum context length is {context_length} tokens. However, this request "
            f"needs {'at least ' if at_least else ''}{prompt_tokens} prompt tokens + {max_tokens} max_tokens "
            f"= {prompt_tokens + max_tokens} tokens. Shorten the prompt or lower max_tokens.",
            param="max_tokens",
        )
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max_tokens
        self.context_length = context_length


class ModelNotChatCapableError(InvalidRequestError):
    """Raised when a chat-style request targets a model that has no chat template."""

    openai_code = "model_not_chat_capable"

    def __init__(self, model_id: str) -> None:
        super().__init__(
            "This action doesn't support the model that you provided. Try again with a supported text or "
            f"chat model. (Model '{model_id}' has no chat template: add chat_template.jinja or a "
            "'chat_template' entry in tokenizer_config.json and import it again, or use a prompt-style "
            "completion request.)",
            model_id=model_id,
        )
        self.model_id = model_id


class WrongModelKindError(InvalidRequestError):
    """Raised when a request needs another kind of model: text generation sent to an embedding model,
    or an embeddings request sent to a text model. Retrying does not help; use a model of the right kind."""

    openai_code = "model_kind_mismatch"

    def __init__(self, model_id: str, kind: str = "embedding", wanted: str = "text generation") -> None:
        if kind == "embedding":
            text = (
                f"Model '{model_id}' is an embedding model: it answers embeddings requests (OpenAI POST "
                '/v1/embeddings, or InvokeModel with a Titan {"inputText"} or Cohere {"texts"} body), '
                f"not {wanted}. Send {wanted} to a text model."
            )
        else:
            body = (
                " (it reads InvokeModel bodies with 'prompt' or 'messages'; this body has neither 'prompt' nor "
                "'messages')"
                if "body" in wanted
                else ""
            )
            text = (
                f"Model '{model_id}' is a text-generation model, so it cannot answer {wanted}{body}. Import a "
                "sentence-embedding model (a sentence-transformers folder with modules.json) and send the "
                "request to it."
            )
        super().__init__(text, model_id=model_id)
        self.model_id = model_id


class ModelValidationError(OutcropError):
    """Raised when an imported model folder fails validation; ``problems`` lists every failure."""

    bedrock_name = "ValidationException"
    bedrock_status = 400
    openai_type = "invalid_request_error"
    openai_status = 400
    openai_code = "model_invalid"
    sagemaker_name = "ValidationException"
    sagemaker_status = 400
    sagemaker_runtime_name = "ValidationError"
    sagemaker_runtime_status = 400

    def __init__(self, problems: list[str]) -> None:
        lines = "\n".join(f"- {p}" for p in problems)
        super().__init__(f"The model folder failed {len(problems)} check(s):\n{lines}", problems=problems)
        self.problems = problems


class NotFoundError(OutcropError):
    """Raised when a job, model or copy that the request names does not exist."""

    bedrock_name = "ResourceNotFoundException"
    bedrock_status = 404
    openai_type = "invalid_request_error"
    openai_status = 404
    openai_code = "model_not_found"
    # SageMaker answers an unknown resource as a ValidationException ("Could not find endpoint ...").
    sagemaker_name = "ValidationException"
    sagemaker_status = 400
    sagemaker_runtime_name = "ValidationError"
    sagemaker_runtime_status = 400

    def __init__(self, kind: str, identifier: str, hint: str = "") -> None:
        message = f"{kind} '{identifier}' was not found."
        if hint:
            message += f" {hint}"
        super().__init__(message, kind=kind, identifier=identifier)
        self.kind = kind
        self.identifier = identifier


class ConflictError(OutcropError):
    """Raised when a name is already taken or a resource is busy (e.g. deleting a model in use)."""

    bedrock_name = "ConflictException"
    bedrock_status = 400
    openai_type = "invalid_request_error"
    openai_status = 409
    openai_code = "conflict"
    sagemaker_name = "ResourceInUse"
    sagemaker_status = 400
    sagemaker_runtime_name = "ValidationError"
    sagemaker_runtime_status = 400


class QuotaExceededError(OutcropError):
    """Raised when a configured quota (imported models, concurrent imports, ...) is full."""

    bedrock_name = "ServiceQuotaExceededException"
    bedrock_status = 400
    openai_type = "insufficient_quota"
    openai_status = 429
    openai_code = "quota_exceeded"
    sagemaker_name = "ResourceLimitExceeded"
    sagemaker_status = 400
    sagemaker_runtime_name = "ValidationError"
    sagemaker_runtime_status = 400

    def __init__(self, message: str, *, quota: str, limit: int) -> None:
        super().__init__(message, quota=quota, limit=limit)
        self.quota = quota
        self.limit = limit


class AuthenticationError(OutcropError):
    """Raised when a request carries no credentials or credentials Outcrop does not know."""

    bedrock_name = "AccessDeniedException"
    bedrock_status = 403
    openai_type = "authentication_error"
    openai_status = 401
    openai_code = "invalid_api_key"
    sagemaker_name = "UnrecognizedClientException"
    sagemaker_status = 403
    sagemaker_runtime_name = "UnrecognizedClientException"
    sagemaker_runtime_status = 403


class InvalidSignatureError(AuthenticationError):
    """Raised when a SigV4 signature, its scope (region) or its date does not check out."""

    # AWS's own name for it (in no service model: botocore raises it as a ClientError code).
    bedrock_name = "InvalidSignatureException"
    bedrock_status = 403


class UnrecognizedClientError(AuthenticationError):
    """Raised when a SigV4 request names an access key id Outcrop does not know."""

    bedrock_name = "UnrecognizedClientException"
    bedrock_status = 403


class AccessDeniedError(OutcropError):
    """Raised when the caller's credentials are valid but not allowed to do this action."""

    bedrock_name = "AccessDeniedException"
    bedrock_status = 403
    openai_type = "permission_error"
    openai_status = 403
    sagemaker_name = "AccessDeniedException"
    sagemaker_status = 400
    sagemaker_runtime_name = "AccessDeniedException"
    sagemaker_runtime_status = 403


class ThrottlingError(OutcropError):
    """Raised when a principal exceeds its request or token rate. Retry after a pause."""

    bedrock_name = "ThrottlingException"
    bedrock_status = 429
    openai_type = "rate_limit_error"
    openai_status = 429
    openai_code = "rate_limit_exceeded"
    # Not in the runtime model, but in botocore's throttling codes, so boto3 backs off and retries.
    sagemaker_name = "ThrottlingException"
    sagemaker_status = 400
    sagemaker_runtime_name = "ThrottlingException"
    sagemaker_runtime_status = 400

    retryable = True

    def __init__(self, message: str, *, retry_after_seconds: float = 1.0) -> None:
        super().__init__(message, retry_after_seconds=retry_after_seconds)
        self.retry_after_seconds = retry_after_seconds


class ModelNotReadyError(OutcropError):
    """Raised when the model has no ready copy yet; one is being started. Retry shortly."""

    bedrock_name = "ModelNotReadyException"
    bedrock_status = 429
    openai_type = "server_error"
    openai_status = 503
    openai_code = "model_not_ready"
    sagemaker_name = "ThrottlingException"
    sagemaker_status = 400
    sagemaker_runtime_name = "ModelNotReadyException"
    sagemaker_runtime_status = 429

    retryable = True

    def __init__(self, model_id: str, *, retry_after_seconds: float = 2.0) -> None:
        super().__init__(
            "Model is not ready for inference. Wait and try your request again. "
            f"(A copy of '{model_id}' is starting. boto3 retries this by itself with "
            "Config(retries={'mode': 'standard', 'total_max_attempts': 20}): a cold start can take half a minute.)",
            model_id=model_id,
            retry_after_seconds=retry_after_seconds,
        )
        self.model_id = model_id
        self.retry_after_seconds = retry_after_seconds


class ModelTimeoutError(OutcropError):
    """Raised when the model did not finish before the request's deadline."""

    bedrock_name = "ModelTimeoutException"
    bedrock_status = 408
    openai_type = "timeout_error"
    openai_status = 504
    openai_code = "model_timeout"
    sagemaker_name = "InternalFailure"
    sagemaker_status = 500
    sagemaker_runtime_name = "ModelError"
    sagemaker_runtime_status = 424

    retryable = True


class ModelFailedError(OutcropError):
    """Raised when a model copy failed while answering (crashed, or returned an error)."""

    bedrock_name = "ModelErrorException"
    bedrock_status = 424
    openai_type = "server_error"
    openai_status = 502
    openai_code = "model_error"
    sagemaker_name = "InternalFailure"
    sagemaker_status = 500
    sagemaker_runtime_name = "ModelError"
    sagemaker_runtime_status = 424

    retryable = True

    def __init__(self, message: str, *, original_status_code: int = 500, model_id: str = "") -> None:
        super().__init__(message, original_status_code=original_status_code, model_id=model_id)
        self.original_status_code = original_status_code
        self.model_id = model_id


class ServiceUnavailableError(OutcropError):
    """Raised when Outcrop is overloaded (queue full) or has no room to start a copy."""

    bedrock_name = "ServiceUnavailableException"
    bedrock_status = 503
    openai_type = "server_error"
    openai_status = 503
    openai_code = "overloaded"
    sagemaker_name = "ServiceUnavailable"
    sagemaker_status = 503
    sagemaker_runtime_name = "ServiceUnavailable"
    sagemaker_runtime_status = 503

    retryable = True

    def __init__(self, message: str, *, retry_after_seconds: float = 1.0) -> None:
        super().__init__(message, retry_after_seconds=retry_after_seconds)
        self.retry_after_seconds = retry_after_seconds


class ConfigError(OutcropError):
    """Raised when Outcrop's own configuration (env vars, flags) is invalid."""


class InternalError(OutcropError):
    """Raised for an unexpected failure inside Outcrop: a bug; the message says what failed."""


def retry_after_headers(exc: OutcropError) -> dict[str, str]:
    """``{"Retry-After": seconds}`` for an error that carries ``retry_after_seconds``, else ``{}``.

    Whole seconds, at least 1: RFC 9110's delay-seconds is an integer, and 0 would invite a
    client to retry at once.
    """
    seconds = getattr(exc, "retry_after_seconds", None)
    if seconds is None:
        seconds = exc.fields.get("retry_after_seconds")
    if not isinstance(seconds, int | float):
        return {}
    return {"Retry-After": str(max(1, round(seconds)))}


def openai_error_body(exc: OutcropError) -> dict[str, Any]:
    """OpenAI's ``{"error": {message, type, param, code}}`` for ``exc``.

    ``code`` is the class's, unless the error carries one of its own in ``fields["code"]``
    (an error a copy answered, relayed by the gateway with the copy's code).
    """
    code = exc.fields.get("code")
    param = exc.fields.get("param")
    return {
        "error": {
            "message": exc.message,
            "type": exc.openai_type,
            "param": param if isinstance(param, str) else None,
            "code": code if isinstance(code, str) else exc.openai_code,
        }
    }


def all_error_classes() -> list[type[OutcropError]]:
    """Every concrete class of the tree, for the dialect-mapping tests."""
    found: list[type[OutcropError]] = []
    pending: list[type[OutcropError]] = [OutcropError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found
