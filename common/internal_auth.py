"""The gateway's signed credential on every call to realtime_svc and async_svc (issue #14 item 7).

The gateway authenticates the client (API key → tenant); the internal services used to take the
tenant from a bare ``X-Precis-Tenant`` header, so anyone who reached their port could act as any
tenant. Now each internal call carries ``Authorization: Bearer <JWT>``, HS256 over a key the three
services share (``PRECIS_INTERNAL_TOKEN_SECRET``, :class:`common.settings.InternalAuthSettings`),
signed by the gateway right before the call. PyJWT does the signing, the constant-time check and
the ``exp``/``iat``/``aud`` rules; this module only decides what a token is bound to:

``sub``  the tenant: the only place an internal service learns it from
``aud``  the service it is for (``realtime_svc`` / ``async_svc``): no token works at the other one
``mth``, ``pth``  the request's method and path (a job's GET token cannot DELETE it, nor read another job)
``bh``   SHA-256 of the exact body bytes: a captured token cannot carry another document
``idk``  the Idempotency-Key header (or null): a captured token cannot mint a differently keyed job
``exp``  ``iat`` + ``PRECIS_INTERNAL_TOKEN_TTL_S`` (30 s): the replay window is one hop, not a session

What stays possible inside that window is sending the very same request again (same method, path,
body and key): for GET that reads what the eavesdropper already saw, DELETE is idempotent, and a
POST with an Idempotency-Key answers the same job. A replay cache (``jti``) would close the rest
but needs state shared by every replica; docs/security.md says so.

Rotation: the secret is a comma-separated list; the first key signs, every key verifies. Add the
new key second everywhere, then move it first, then drop the old one.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass

import httpx
import jwt
from fastapi import Request

from common.problems import Problem

ALGORITHM = "HS256"
HEADER = "Authorization"
# A body above this size is hashed in a worker thread (hashlib releases the GIL), so a 10 MB
# document does not stall the event loop for the ~20 ms the digest takes.
_THREAD_HASH_BYTES = 256 * 1024
# Accepted clock skew between the gateway's node and the service's.
LEEWAY_S = 5


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


async def body_digest_async(body: bytes) -> str:
    if len(body) > _THREAD_HASH_BYTES:
        return await asyncio.to_thread(body_digest, body)
    return body_digest(body)


def sign(
    key: str,
    *,
    tenant: str,
    audience: str,
    method: str,
    path: str,
    digest: str,
    idempotency_key: str | None = None,
    ttl_s: int = 30,
    now: float | None = None,
) -> str:
    """A token for exactly one request (see the module docstring for each claim)."""
    iat = int(time.time() if now is None else now)
    claims = {
        "sub": tenant,
        "aud": audience,
        "mth": method.upper(),
        "pth": path,
        "bh": digest,
        "idk": idempotency_key,
        "iat": iat,
        "exp": iat + ttl_s,
    }
    return jwt.encode(claims, key, algorithm=ALGORITHM)


def bearer(token: str) -> dict[str, str]:
    return {HEADER: f"Bearer {token}"}


def unauthorized(detail: str) -> Problem:
    """401 naming what is missing or wrong; the token itself is never echoed."""
    return Problem(
        401,
        "internal-unauthorized",
        "Missing or invalid internal credential",
        detail,
        headers={"WWW-Authenticate": 'Bearer realm="precis-internal"'},
    )


@dataclass(frozen=True)
class Caller:
    tenant: str


def verify(
    keys: Sequence[str],
    authorization: str | None,
    *,
    audience: str,
    method: str,
    path: str,
    digest: str,
    idempotency_key: str | None,
) -> Caller:
    """The verified caller of one request, or the 401 :class:`Problem` saying why not."""
    if not authorization:
        raise unauthorized(
            "no Authorization header: internal services accept only calls the gateway signs "
            "(Authorization: Bearer <internal token>)"
        )
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized("the Authorization header must be 'Bearer <internal token>'")
    token = token.strip()
    claims = None
    for key in keys:
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],  # fixed: never the algorithm the token names
                audience=audience,
                leeway=LEEWAY_S,
                options={"require": ["exp", "iat", "sub", "aud"]},
            )
            break
        except jwt.InvalidSignatureError:
            continue  # maybe signed with another key of the rotation list
        except jwt.ExpiredSignatureError:
            raise unauthorized("the internal token has expired") from None
        except jwt.InvalidAudienceError:
            raise unauthorized(f"the internal token is not for {audience}") from None
        except jwt.MissingRequiredClaimError as exc:
            raise unauthorized(f"the internal token lacks its {exc.claim!r} claim") from None
        except jwt.ImmatureSignatureError:
            raise unauthorized("the internal token is not valid yet (issued in the future)") from None
        except jwt.InvalidTokenError:
            raise unauthorized("the internal token is malformed") from None
    if claims is None:
        raise unauthorized("the internal token's signature is not valid")
    tenant = claims.get("sub")
    if not isinstance(tenant, str) or not 1 <= len(tenant) <= 128:
        raise unauthorized("the internal token names no valid tenant")
    if claims.get("mth") != method.upper() or claims.get("pth") != path:
        raise unauthorized("the internal token was issued for another method or path")
    if claims.get("bh") != digest:
        raise unauthorized("the internal token was issued for another request body")
    if claims.get("idk") != idempotency_key:
        raise unauthorized("the internal token was issued for another Idempotency-Key")
    return Caller(tenant)


async def verify_request(keys: Sequence[str], request: Request, audience: str) -> Caller:
    """:func:`verify` for a FastAPI request. The body is the one FastAPI already buffered for
    the endpoint (``request.body()`` is cached), so nothing is read twice."""
    return verify(
        keys,
        request.headers.get(HEADER),
        audience=audience,
        method=request.method,
        path=request.url.path,
        digest=await body_digest_async(await request.body()),
        idempotency_key=request.headers.get("Idempotency-Key"),
    )


class InternalTokenAuth(httpx.Auth):
    """httpx auth that signs each request as the gateway does: for tests and tools that call
    realtime_svc or async_svc directly (they need the shared secret, as the gateway does)."""

    requires_request_body = True

    def __init__(self, key: str, tenant: str, audience: str, ttl_s: int = 30) -> None:
        self.key = key
        self.tenant = tenant
        self.audience = audience
        self.ttl_s = ttl_s

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = sign(
            self.key,
            tenant=self.tenant,
            audience=self.audience,
            method=request.method,
            path=request.url.path,
            digest=body_digest(request.content),
            idempotency_key=request.headers.get("Idempotency-Key"),
            ttl_s=self.ttl_s,
        )
        request.headers[HEADER] = f"Bearer {token}"
        yield request
