"""AWS Signature Version 4 verification, exactly as botocore signs ``bedrock`` requests.

    canonical request = METHOD \\n canonical URI \\n canonical query \\n canonical headers \\n
                        signed headers \\n payload hash
    string to sign    = AWS4-HMAC-SHA256 \\n X-Amz-Date \\n scope \\n sha256(canonical request)
    signing key       = HMAC chain of ("AWS4" + secret, date, region, service, "aws4_request")

The secret never leaves the server: the caller proves it knows it. Every failure raises the
same ``AuthenticationError`` wording AWS uses, so a caller learns nothing about which part
(key, secret, date) was wrong; only the expired-date case says so, as AWS does.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote

from outcrop.errors import AuthenticationError

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICES = ("bedrock", "sagemaker")  # sagemaker: both boto3 sagemaker and sagemaker-runtime
# AWS rejects a request whose X-Amz-Date is more than 5 minutes from the server's clock.
MAX_CLOCK_SKEW_SECONDS = 300
_AUTH_RE = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=(?P<credential>[^,\s]+),\s*SignedHeaders=(?P<signed>[^,\s]+),\s*"
    r"Signature=(?P<signature>[0-9a-f]{64})\s*$"
)
SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. Check your AWS Secret "
    "Access Key and signing method."
)
UNKNOWN_KEY = "The security token included in the request is invalid."


@dataclass(frozen=True)
class SignedRequest:
    method: str
    raw_path: str  # the path exactly as sent (still percent-encoded)
    query_string: str
    headers: Mapping[str, str]  # lower-case names
    body: bytes


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = _hmac(("AWS4" + secret).encode(), date)
    key = _hmac(key, region)
    key = _hmac(key, service)
    return _hmac(key, "aws4_request")


def _canonical_query(query_string: str) -> str:
    pairs = parse_qsl(query_string, keep_blank_values=True)
    encoded = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in pairs)
    return "&".join(f"{k}={v}" for k, v in encoded)


def canonical_request(req: SignedRequest, signed_headers: list[str]) -> str:
    # botocore signs the already-encoded path, encoding it once more (all services but S3).
    uri = quote(req.raw_path or "/", safe="/~")
    headers = "".join(f"{h}:{' '.join(req.headers.get(h, '').split())}\n" for h in signed_headers)
    payload = req.headers.get("x-amz-content-sha256") or hashlib.sha256(req.body).hexdigest()
    return "\n".join(
        [
            req.method.upper(),
            uri,
            _canonical_query(req.query_string),
            headers,
            ";".join(signed_headers),
            payload,
        ]
    )


def verify(
    req: SignedRequest, secret_for: Callable[[str], str | None], now: dt.datetime | None = None
) -> str:
    """Check the request's SigV4 signature; returns the access key id, or raises AuthenticationError."""
    match = _AUTH_RE.match(req.headers.get("authorization", ""))
    if match is None:
        raise AuthenticationError(
            "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature'."
        )
    parts = match.group("credential").split("/")
    if len(parts) != 5 or parts[4] != "aws4_request" or parts[3] not in SERVICES:
        raise AuthenticationError(
            "Credential should be scoped to a valid service: <key>/<date>/<region>/bedrock/aws4_request."
        )
    access_key, date, region, service, _ = parts
    signed = match.group("signed").split(";")
    if "host" not in signed or signed != sorted(signed):
        raise AuthenticationError(SIGNATURE_MISMATCH)
    amz_date = req.headers.get("x-amz-date", "")
    try:
        when = dt.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        raise AuthenticationError(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
        ) from None
    now = now or dt.datetime.now(dt.UTC)
    if abs((now - when).total_seconds()) > MAX_CLOCK_SKEW_SECONDS or amz_date[:8] != date:
        raise AuthenticationError(
            f"Signature expired: {amz_date} is now earlier than {(now - dt.timedelta(minutes=5)):%Y%m%dT%H%M%SZ} "
            f"({now:%Y%m%dT%H%M%SZ} - 5 min.)"
            if when < now
            else "Signature not yet current."
        )
    secret = secret_for(access_key)
    # Compute a signature even for unknown keys, so timing does not reveal which keys exist.
    key = signing_key(secret or "unknown-key-" + access_key, date, region, service)
    scope = f"{date}/{region}/{service}/aws4_request"
    digest = hashlib.sha256(canonical_request(req, signed).encode()).hexdigest()
    expected = hmac.new(
        key, f"{ALGORITHM}\n{amz_date}\n{scope}\n{digest}".encode(), hashlib.sha256
    ).hexdigest()
    if not hmac.compare_digest(expected, match.group("signature")) or secret is None:
        raise AuthenticationError(UNKNOWN_KEY if secret is None else SIGNATURE_MISMATCH)
    payload_hash = req.headers.get("x-amz-content-sha256")
    if (
        payload_hash
        and payload_hash != "UNSIGNED-PAYLOAD"
        and payload_hash != hashlib.sha256(req.body).hexdigest()
    ):
        raise AuthenticationError(SIGNATURE_MISMATCH)
    return access_key
