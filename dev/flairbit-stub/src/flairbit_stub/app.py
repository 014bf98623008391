"""The FlairBit stand-in as a Starlette app: dev tokens, JWKS, profile look-ups, test controls.

``create_app(settings)`` wires the routes; its lifespan loads (or creates) the signing key and
builds the in-memory :class:`~flairbit_stub.state.World`, both handed to the handlers through
the typed :class:`Runtime`. Handlers are thin: parse, call, answer. Errors leave as RFC 9457
problem details.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TypeVar

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import errors, tokens, wire
from .keys import PublicKeyFile, SigningKey, load_or_create_signing_key
from .settings import Settings
from .state import (
    DEFAULT_FAULT_DELAY_MS,
    DEFAULT_FAULT_STATUS,
    FaultMode,
    Faults,
    Profile,
    World,
    normalise_email,
)

log = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://flairbit.example/problems/"
MAX_BODY_BYTES = 64 * 1024
_RUNTIME = "flairbit_runtime"

# Most specific first: the first isinstance match wins.
_STATUS: tuple[tuple[type[errors.StubError], int], ...] = (
    (errors.BodyTooLarge, 413),
    (errors.MalformedBody, 400),
    (errors.InvalidInput, 422),
    (errors.Unauthenticated, 401),
    (errors.NotFound, 404),
)

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Runtime:
    settings: Settings
    signing_key: SigningKey
    chat_service_key: PublicKeyFile
    world: World
    clock: Callable[[], float]

    def now(self) -> int:
        return int(self.clock())


def _runtime(request: Request) -> Runtime:
    runtime = request.state[_RUNTIME]
    assert isinstance(runtime, Runtime), "the lifespan did not run"
    return runtime


# --- responses ---------------------------------------------------------------------------


def _json(body: msgspec.Struct, status: int = 200) -> Response:
    return Response(msgspec.json.encode(body), status_code=status, media_type="application/json")


def problem_response(
    status: int,
    *,
    title: str,
    detail: str,
    code: str,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body = wire.Problem(
        type=PROBLEM_TYPE_BASE + code.lower().replace("_", "-"),
        title=title,
        status=status,
        detail=detail,
        code=code,
        field=field,
    )
    return Response(
        msgspec.json.encode(body),
        status_code=status,
        media_type=PROBLEM_CONTENT_TYPE,
        headers=headers,
    )


def _stub_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.StubError)
    status = next((code for cls, code in _STATUS if isinstance(exc, cls)), 500)
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, errors.Unauthenticated) else None
    return problem_response(
        status, title=exc.title, detail=exc.detail, code=exc.code, field=exc.field, headers=headers
    )


_HTTP_CODES = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}


def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, f"HTTP_{exc.status_code}")
    title = code.replace("_", " ").capitalize()
    return problem_response(
        exc.status_code,
        title=title,
        detail=f"{request.method} {request.url.path}: {exc.detail}",
        code=code,
        headers=dict(exc.headers) if exc.headers else None,
    )


def _server_error(request: Request, exc: Exception) -> Response:
    return problem_response(
        500, title="Internal error", detail="the stub failed; see its log", code="INTERNAL"
    )


# --- request parsing ---------------------------------------------------------------------

_MISSING_FIELD = re.compile(r"missing required field `([^`]+)`")
_AT_FIELD = re.compile(r"at `\$\.([^`.\[]+)")


def _field_of(exc: msgspec.ValidationError) -> str | None:
    message = str(exc)
    match = _MISSING_FIELD.search(message) or _AT_FIELD.search(message)
    return match.group(1) if match else None


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise errors.BodyTooLarge(f"the body may hold at most {MAX_BODY_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise errors.BodyTooLarge(f"the body may hold at most {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _decode(request: Request, kind: type[_T]) -> _T:
    body = await _read_body(request)
    if not body.strip():
        raise errors.MalformedBody("this route needs a JSON body")
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        raise errors.InvalidInput(str(exc), field=_field_of(exc)) from None
    except msgspec.DecodeError as exc:
        raise errors.MalformedBody(f"the body is not valid JSON: {exc}") from None


def _path_email(request: Request) -> str:
    return normalise_email(str(request.path_params["email"]))


def _profile_body(profile: Profile) -> wire.ProfileBody:
    return wire.ProfileBody(
        id=profile.id,
        display_name=profile.display_name,
        user_email=profile.user_email,
        user_id=profile.user_id,
    )


def _faults_body(faults: Faults) -> wire.FaultsBody:
    return wire.FaultsBody(mode=faults.mode, delay_ms=faults.delay_ms, status=faults.status)


# --- handlers ----------------------------------------------------------------------------


async def health(request: Request) -> Response:
    return _json(wire.StatusBody(status="ok"))


async def jwks(request: Request) -> Response:
    document = _runtime(request).signing_key.jwks()
    return Response(msgspec.json.encode(document), media_type="application/json")


async def mint_user_token(request: Request) -> Response:
    runtime = _runtime(request)
    body = await _decode(request, wire.TokenRequest)
    settings = runtime.settings
    ttl = settings.user_token_ttl if body.ttl_seconds is None else body.ttl_seconds
    token = tokens.user_token(
        runtime.signing_key,
        email=normalise_email(body.email),
        issuer=settings.issuer,
        audience=settings.user_audience,
        now=runtime.now(),
        ttl_seconds=ttl,
        not_before_offset=body.not_before_offset,
    )
    return _json(wire.TokenResponse(token=token))


async def mint_service_token(request: Request) -> Response:
    runtime = _runtime(request)
    token = tokens.service_token(
        runtime.signing_key,
        issuer=runtime.settings.issuer,
        audience=runtime.settings.service_audience,
        now=runtime.now(),
    )
    return _json(wire.TokenResponse(token=token))


async def lookup_profile(request: Request) -> Response:
    runtime = _runtime(request)
    world = runtime.world
    world.record_profile_lookup()
    faults = world.faults
    if faults.mode is FaultMode.SLOW:
        await asyncio.sleep(faults.delay_ms / 1000)
    elif faults.mode is FaultMode.FAIL:
        return problem_response(
            faults.status,
            title="Injected fault",
            detail=f"profile look-ups are set to fail with {faults.status} (POST /dev/faults)",
            code="INJECTED_FAULT",
        )
    settings = runtime.settings
    tokens.verify_service_token(
        tokens.bearer_token(request.headers.get("authorization")),
        runtime.chat_service_key.current(),
        issuer=settings.chat_service_issuer,
        audience=settings.chat_service_audience,
    )
    try:
        email = _path_email(request)
    except errors.InvalidInput:
        raise errors.UserNotFound("no user has that address: it is not a valid email") from None
    profile = world.profile(email, str(request.path_params["intent"]))
    return _json(_profile_body(profile))


async def delete_user(request: Request) -> Response:
    _runtime(request).world.delete_user(_path_email(request))
    return Response(status_code=204)


async def remove_profile(request: Request) -> Response:
    world = _runtime(request).world
    world.remove_profile(_path_email(request), str(request.path_params["intent"]))
    return Response(status_code=204)


async def put_profile(request: Request) -> Response:
    world = _runtime(request).world
    email = _path_email(request)
    body = await _decode(request, wire.DisplayNameRequest)
    profile = world.put_profile(email, str(request.path_params["intent"]), body.display_name)
    return _json(_profile_body(profile))


async def set_faults(request: Request) -> Response:
    world = _runtime(request).world
    body = await _decode(request, wire.FaultsBody)
    world.set_faults(
        Faults(
            mode=body.mode,
            delay_ms=DEFAULT_FAULT_DELAY_MS if body.delay_ms is None else body.delay_ms,
            status=DEFAULT_FAULT_STATUS if body.status is None else body.status,
        )
    )
    return _json(_faults_body(world.faults))


async def get_faults(request: Request) -> Response:
    return _json(_faults_body(_runtime(request).world.faults))


async def get_stats(request: Request) -> Response:
    world = _runtime(request).world
    return _json(wire.StatsBody(profile_lookups=world.profile_lookups))


async def reset(request: Request) -> Response:
    _runtime(request).world.reset()
    return Response(status_code=204)


# --- wiring ------------------------------------------------------------------------------

ROUTES = [
    Route("/healthz", health, methods=["GET"]),
    Route("/readyz", health, methods=["GET"]),
    Route("/.well-known/jwks.json", jwks, methods=["GET"]),
    Route("/internal/chat-service/users/{email}/profile/{intent}", lookup_profile, methods=["GET"]),
    Route("/dev/token", mint_user_token, methods=["POST"]),
    Route("/dev/service-token", mint_service_token, methods=["POST"]),
    Route("/dev/users/{email}", delete_user, methods=["DELETE"]),
    Route("/dev/users/{email}/profile/{intent}", remove_profile, methods=["DELETE"]),
    Route("/dev/users/{email}/profile/{intent}", put_profile, methods=["PUT"]),
    Route("/dev/faults", set_faults, methods=["POST"]),
    Route("/dev/faults", get_faults, methods=["GET"]),
    Route("/dev/stats", get_stats, methods=["GET"]),
    Route("/dev/reset", reset, methods=["POST"]),
]


def create_app(settings: Settings, *, clock: Callable[[], float] = time.time) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Runtime]]:
        signing_key = await asyncio.to_thread(load_or_create_signing_key, settings.key_dir)
        log.info(
            "FlairBit stub signing with kid %s (keys in %s); chat service key expected at %s",
            signing_key.kid,
            settings.key_dir,
            settings.chat_service_public_key_file,
        )
        yield {
            _RUNTIME: Runtime(
                settings=settings,
                signing_key=signing_key,
                chat_service_key=PublicKeyFile(settings.chat_service_public_key_file),
                world=World(settings.intents),
                clock=clock,
            )
        }

    return Starlette(
        routes=ROUTES,
        lifespan=lifespan,
        exception_handlers={
            errors.StubError: _stub_error,
            HTTPException: _http_error,
            Exception: _server_error,
        },
    )
