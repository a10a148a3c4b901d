"""SigV4 verification against signatures made by botocore itself."""

from __future__ import annotations

import datetime as dt
import urllib.parse
from dataclasses import replace

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from outcrop.auth.sigv4 import SignedRequest, verify
from outcrop.errors import AuthenticationError

SECRETS = {"AKIDGOOD": "s3cret/with+chars"}


def signed(
    url: str,
    body: bytes = b'{"prompt":"x"}',
    key: str = "AKIDGOOD",
    secret: str = SECRETS["AKIDGOOD"],
    service: str = "bedrock",
    method: str = "POST",
) -> SignedRequest:
    request = AWSRequest(method=method, url=url, data=body, headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(key, secret), service, "eu-west-3").add_auth(request)
    prepared = request.prepare()
    parts = urllib.parse.urlsplit(prepared.url)
    headers = {k.lower(): v for k, v in prepared.headers.items()}
    headers["host"] = parts.netloc
    return SignedRequest(method, parts.path, parts.query, headers, prepared.body or b"")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/imported-models?maxResults=5&nameContains=a%20b",
        "http://127.0.0.1:8080/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A000000000000%3Aimported-model%2Fabcdefghijkl/invoke",
        "http://127.0.0.1:8080/model/my-model/converse-stream",
    ],
)
def test_botocore_signatures_verify(url: str) -> None:
    assert verify(signed(url), SECRETS.get) == "AKIDGOOD"


def test_a_tampered_body_fails() -> None:
    request = signed("http://h/model/m/invoke")
    with pytest.raises(AuthenticationError, match="signature we calculated does not match"):
        verify(replace(request, body=b'{"prompt":"y"}'), SECRETS.get)


def test_a_wrong_secret_fails_like_aws() -> None:
    with pytest.raises(AuthenticationError, match="does not match"):
        verify(signed("http://h/imported-models", secret="guess"), SECRETS.get)


def test_an_unknown_key_fails_like_aws() -> None:
    with pytest.raises(AuthenticationError, match="security token included in the request is invalid"):
        verify(signed("http://h/imported-models", key="AKIDNOPE"), SECRETS.get)


def test_an_old_signature_is_expired() -> None:
    request = signed("http://h/imported-models")
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=6)
    with pytest.raises(AuthenticationError, match="Signature expired"):
        verify(request, SECRETS.get, now=later)


def test_another_service_scope_is_rejected() -> None:
    with pytest.raises(AuthenticationError, match="valid service"):
        verify(signed("http://h/imported-models", service="s3"), SECRETS.get)


@pytest.mark.parametrize("header", ["", "AWS4-HMAC-SHA256 Credential=x", "Bearer abc"])
def test_malformed_authorization_headers_fail(header: str) -> None:
    request = signed("http://h/imported-models")
    with pytest.raises(AuthenticationError):
        verify(replace(request, headers={**request.headers, "authorization": header}), SECRETS.get)
