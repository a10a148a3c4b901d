"""The copy's token check: every route but /health needs ``Authorization: Bearer <its token>``."""

from __future__ import annotations

import pytest

from outcrop.engine.auth import bearer_token, refusal

TOKEN = b"copy-token-0001"


@pytest.mark.parametrize(
    ("path", "authorization", "refused"),
    [
        ("/health", None, None),  # the readiness probe needs no secret
        ("/health", b"Bearer wrong", None),
        ("/v1/completions", None, "carried no Authorization header"),
        ("/v1/completions", b"", "carried no Authorization header"),
        ("/v1/chat/completions", b"Basic Y29weQ==", "not 'Bearer <token>'"),
        ("/v1/completions", b"Bearer ", "not 'Bearer <token>'"),
        ("/metrics", b"Bearer copy-token-0002", "is not this model copy's token"),
        ("/v1/completions", b"Bearer copy-token-0001", None),
        ("/v1/completions", b"bearer   copy-token-0001 ", None),  # scheme is case-insensitive
        ("/v1/tokenize", b"Bearer copy-token-0001", None),
    ],
)
def test_a_request_passes_only_with_the_copys_token_except_health(
    path: str, authorization: bytes | None, refused: str | None
) -> None:
    why = refusal(path, authorization, TOKEN)
    if refused is None:
        assert why is None
    else:
        assert why is not None and refused in why and "through the Outcrop gateway" in why


def test_a_refusal_never_echoes_the_token_presented() -> None:
    why = refusal("/v1/completions", b"Bearer guessed-secret", TOKEN)
    assert why is not None and "guessed-secret" not in why and TOKEN.decode() not in why


@pytest.mark.parametrize(
    ("header", "token"),
    [(b"Bearer abc", b"abc"), (b"BEARER abc", b"abc"), (b"Token abc", None), (None, None), (b"Bearer", None)],
)
def test_bearer_token_reads_only_the_bearer_scheme(header: bytes | None, token: bytes | None) -> None:
    assert bearer_token(header) == token
