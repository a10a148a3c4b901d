"""AWS Signature Version 4 verification, exactly as botocore signs ``bedrock`` requests.

    canonical request = METHOD \\n canonical URI \\n canonical query \\n canonical headers \\n
                        signed headers \\n payload hash
    string to sign    = AWS4-HMAC-SHA256 \\n X-Amz-Date \\n scope \\n sha256(canonical request)
    signing key       = HMAC chain of ("AWS4" + secret, date, region, service, "aws4_request")

The secret never leaves the server: the caller proves it knows it. Failures use AWS's names and
wording: an unknown access key id is ``UnrecognizedClientException``, a wrong signature, scope
region or date ``InvalidSignatureException`` (clients branch on these names).

The gateway checks in two steps so that an unauthenticated caller cannot make it read a body:
:func:`check_headers` (shape, scope, date, signed headers) and the key look-up run on the
headers alone; only then is the body read (bounded) and :func:`verify_signature` run.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote

from outcrop.errors import AuthenticationError, InvalidSignatureError, UnrecognizedClientError

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


@dataclass(frozen=True)
class Credential:
    """What an ``Authorization: AWS4-HMAC-SHA256`` header claims, checked before the body is read."""

    access_key: str
    date: str
    region: str
    service: str
    signed_headers: list[str]
    signature: str
    amz_date: str


def check_headers(
    headers: Mapping[str, str], *, region: str | None = None, now: dt.datetime | None = None
) -> Credential:
    """Every check that needs no secret and no body: shape, scope (service and ``region``), date,
    signed headers. The gateway runs it before it reads a byte of the body."""
    match = _AUTH_RE.match(headers.get("authorization", ""))
    if match is None:
        raise AuthenticationError(
            "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature'."
        )
    parts = match.group("credential").split("/")
    if len(parts) != 5 or parts[4] != "aws4_request" or parts[3] not in SERVICES:
        raise AuthenticationError(
            "Credential should be scoped to a valid service: <key>/<date>/<region>/bedrock/aws4_request."
        )
    access_key, date, scope_region, service, _ = parts
    if region is not None and scope_region != region:
        raise InvalidSignatureError(
            f"Credential should be scoped to a valid region, not '{scope_region[:40]}'. This server's region "
            f"is '{region}': create the client with region_name='{region}' (or set OUTCROP_AWS__REGION)."
        )
    signed = match.group("signed").split(";")
    if "host" not in signed or signed != sorted(signed):
        raise InvalidSignatureError(SIGNATURE_MISMATCH)
    if "x-amz-content-sha256" in headers and "x-amz-content-sha256" not in signed:
        # Unsigned, the declared payload hash (UNSIGNED-PAYLOAD included) would let the body change freely.
        raise InvalidSignatureError(
            "The x-amz-content-sha256 header was sent but is not among the SignedHeaders; sign it "
            "(botocore does) or do not send it."
        )
    amz_date = headers.get("x-amz-date", "")
    try:
        when = dt.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        raise AuthenticationError(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
        ) from None
    now = now or dt.datetime.now(dt.UTC)
    if abs((now - when).total_seconds()) > MAX_CLOCK_SKEW_SECONDS or amz_date[:8] != date:
        raise InvalidSignatureError(
            f"Signature expired: {amz_date} is now earlier than {(now - dt.timedelta(minutes=5)):%Y%m%dT%H%M%SZ} "
            f"({now:%Y%m%dT%H%M%SZ} - 5 min.)"
            if when < now
            else "Signature not yet current."
        )
    return Credential(access_key, date, scope_region, service, signed, match.group("signature"), amz_date)


def verify_signature(req: SignedRequest, cred: Credential, secret: str) -> None:
    """Check the signature (and the body against a signed payload hash) once the body is read."""
    key = signing_key(secret, cred.date, cred.region, cred.service)
    scope = f"{cred.date}/{cred.region}/{cred.service}/aws4_request"
    digest = hashlib.sha256(canonical_request(req, cred.signed_headers).encode()).hexdigest()
    expected = hmac.new(
        key, f"{ALGORITHM}\n{cred.amz_date}\n{scope}\n{digest}".encode(), hashlib.sha256
    ).hexdigest()
    if not hmac.compare_digest(expected, cred.signature):
        raise InvalidSignatureError(SIGNATURE_MISMATCH)
    payload_hash = req.headers.get("x-amz-content-sha256")
    if (
        payload_hash
        and payload_hash != "UNSIGNED-PAYLOAD"
        and payload_hash != hashlib.sha256(req.body).hexdigest()
    ):
        raise InvalidSignatureError(SIGNATURE_MISMATCH)


def verify(
    req: SignedRequest,
    secret_for: Callable[[str], str | None],
    now: dt.datetime | None = None,
    region: str | None = None,
) -> str:
    """Check the request's SigV4 signature; returns the access key id, or raises AuthenticationError."""
    cred = check_headers(req.headers, region=region, now=now)
    secret = secret_for(cred.access_key)
    if secret is None:
        raise UnrecognizedClientError(UNKNOWN_KEY)
    verify_signature(req, cred, secret)
    return cred.access_key
