"""The request body limit, enforced while the body streams in, before anyone buffers it.

A request whose ``Content-Length`` is over the limit is refused before a byte of its body is
read (:func:`body_too_large`); a chunked body is counted as it arrives and cut off at the limit
(:func:`limit_body`), so no caller, authenticated or not, can make the gateway hold more than
:data:`MAX_BODY_BYTES` of one request. The error is an ``InvalidRequestError``, answered in the
caller's dialect by the app's error handlers.
"""

from __future__ import annotations

from starlette.types import Message, Receive, Scope

from outcrop.errors import InvalidRequestError

# Why 25 MB: Bedrock's own limit for InvokeModel bodies; a prompt of a 128K-token context is ~0.5 MB.
MAX_BODY_BYTES = 25_000_000


def _too_large(size: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"The request body has {size} bytes; the limit is {MAX_BODY_BYTES:,}. Send a shorter prompt, "
        "or put large inputs in a batch job's input file."
    )


def body_too_large(scope: Scope) -> InvalidRequestError | None:
    """The error for a request whose declared Content-Length is over the limit, else None."""
    for name, value in scope.get("headers") or []:
        if name == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                return None  # the HTTP parser has already refused a malformed one
            return _too_large(f"{declared:,}") if declared > MAX_BODY_BYTES else None
    return None


def limit_body(receive: Receive) -> Receive:
    """``receive`` that raises once the body passes the limit (chunked bodies declare no length)."""
    received = 0

    async def limited() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > MAX_BODY_BYTES:
                raise _too_large(f"more than {MAX_BODY_BYTES:,}")
        return message

    return limited
