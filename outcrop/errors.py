"""Outcrop's one exception tree.

Every error a user can see is an ``OutcropError``. The API edges translate these into
the caller's dialect (``outcrop.api.bedrock.errors`` for Bedrock, ``outcrop.api.openai``
for OpenAI); the CLI prints their message in one red line. A test asserts each class
below is mapped by every dialect.

    OutcropError                      retryable?
    ├── InvalidRequestError           no    the request or its input is malformed
    │   ├── ContextLengthError        no    prompt + max_tokens exceed the model's context
    │   └── ModelNotChatCapableError  no    chat/converse on a model without a chat template
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

from typing import Any


class OutcropWarning(UserWarning):
    """Warnings raised by Outcrop itself (pytest turns them into errors)."""


class OutcropError(Exception):
    """Base of every error Outcrop shows to a user.

    ``message`` says what was wrong and how to fix it; ``retryable`` says whether
    sending the same request again later can succeed.
    """

    retryable: bool = False

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields

    def __str__(self) -> str:
        return self.message


class InvalidRequestError(OutcropError):
    """Raised when a request, a parameter or an input file is malformed. Retrying does not help."""

    def __init__(self, message: str, *, param: str | None = None, **fields: Any) -> None:
        super().__init__(message, param=param, **fields)
        self.param = param


class ContextLengthError(InvalidRequestError):
    """Raised when prompt tokens + max_tokens exceed the model's context length."""

    def __init__(
        self, *, prompt_tokens: int, max_tokens: int, context_length: int, at_least: bool = False
    ) -> None:
        # at_least: prompt_tokens is a lower bound from the prompt's length, found without tokenizing.
        super().__init__(
            f"This request needs {'at least ' if at_least else ''}{prompt_tokens} prompt tokens + "
            f"{max_tokens} max_tokens = "
            f"{prompt_tokens + max_tokens} tokens, but the model's context length is {context_length}. "
            "Shorten the prompt or lower max_tokens.",
            param="max_tokens",
        )
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max_tokens
        self.context_length = context_length


class ModelNotChatCapableError(InvalidRequestError):
    """Raised when a chat-style request targets a model that has no chat template."""

    def __init__(self, model_id: str) -> None:
        super().__init__(
            "This action doesn't support the model that you provided. Try again with a supported text or "
            f"chat model. (Model '{model_id}' has no chat template: add chat_template.jinja or a "
            "'chat_template' entry in tokenizer_config.json and import it again, or use a prompt-style "
            "completion request.)",
            model_id=model_id,
        )
        self.model_id = model_id


class ModelValidationError(OutcropError):
    """Raised when an imported model folder fails validation; ``problems`` lists every failure."""

    def __init__(self, problems: list[str]) -> None:
        lines = "\n".join(f"- {p}" for p in problems)
        super().__init__(f"The model folder failed {len(problems)} check(s):\n{lines}", problems=problems)
        self.problems = problems


class NotFoundError(OutcropError):
    """Raised when a job, model or copy that the request names does not exist."""

    def __init__(self, kind: str, identifier: str, hint: str = "") -> None:
        message = f"{kind} '{identifier}' was not found."
        if hint:
            message += f" {hint}"
        super().__init__(message, kind=kind, identifier=identifier)
        self.kind = kind
        self.identifier = identifier


class ConflictError(OutcropError):
    """Raised when a name is already taken or a resource is busy (e.g. deleting a model in use)."""


class QuotaExceededError(OutcropError):
    """Raised when a configured quota (imported models, concurrent imports, ...) is full."""

    def __init__(self, message: str, *, quota: str, limit: int) -> None:
        super().__init__(message, quota=quota, limit=limit)
        self.quota = quota
        self.limit = limit


class AuthenticationError(OutcropError):
    """Raised when a request carries no credentials or credentials Outcrop does not know."""


class InvalidSignatureError(AuthenticationError):
    """Raised when a SigV4 signature, its scope (region) or its date does not check out."""


class UnrecognizedClientError(AuthenticationError):
    """Raised when a SigV4 request names an access key id Outcrop does not know."""


class AccessDeniedError(OutcropError):
    """Raised when the caller's credentials are valid but not allowed to do this action."""


class ThrottlingError(OutcropError):
    """Raised when a principal exceeds its request or token rate. Retry after a pause."""

    retryable = True

    def __init__(self, message: str, *, retry_after_seconds: float = 1.0) -> None:
        super().__init__(message, retry_after_seconds=retry_after_seconds)
        self.retry_after_seconds = retry_after_seconds


class ModelNotReadyError(OutcropError):
    """Raised when the model has no ready copy yet; one is being started. Retry shortly."""

    retryable = True

    def __init__(self, model_id: str, *, retry_after_seconds: float = 2.0) -> None:
        super().__init__(
            "Model is not ready for inference. Wait and try your request again. "
            f"(A copy of '{model_id}' is starting. boto3 retries this by itself with "
            "Config(retries={'mode': 'standard', 'total_max_attempts': 10}).)",
            model_id=model_id,
            retry_after_seconds=retry_after_seconds,
        )
        self.model_id = model_id
        self.retry_after_seconds = retry_after_seconds


class ModelTimeoutError(OutcropError):
    """Raised when the model did not finish before the request's deadline."""

    retryable = True


class ModelFailedError(OutcropError):
    """Raised when a model copy failed while answering (crashed, or returned an error)."""

    retryable = True

    def __init__(self, message: str, *, original_status_code: int = 500, model_id: str = "") -> None:
        super().__init__(message, original_status_code=original_status_code, model_id=model_id)
        self.original_status_code = original_status_code
        self.model_id = model_id


class ServiceUnavailableError(OutcropError):
    """Raised when Outcrop is overloaded (queue full) or has no room to start a copy."""

    retryable = True

    def __init__(self, message: str, *, retry_after_seconds: float = 1.0) -> None:
        super().__init__(message, retry_after_seconds=retry_after_seconds)
        self.retry_after_seconds = retry_after_seconds


class ConfigError(OutcropError):
    """Raised when Outcrop's own configuration (env vars, flags) is invalid."""


class InternalError(OutcropError):
    """Raised for an unexpected failure inside Outcrop: a bug; the message says what failed."""


def all_error_classes() -> list[type[OutcropError]]:
    """Every concrete class of the tree, for the dialect-mapping tests."""
    found: list[type[OutcropError]] = []
    pending: list[type[OutcropError]] = [OutcropError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found
