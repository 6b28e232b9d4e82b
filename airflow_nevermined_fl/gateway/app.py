"""The gateway's HTTP API (FastAPI), modelled on the Nevermined Gateway's compute endpoints.

Public: ``GET /api/v1/info`` and ``GET /api/v1/ddo/{did}``. Signed (:mod:`.auth`), for the agreement's
consumer only: ``POST compute/execute/{agreement_id}``, ``GET compute/status/{id}``,
``GET compute/logs/{id}?tail=N|follow=true``, ``POST compute/stop/{id}``. Every error is JSON
``{"detail": ...}``; refusals are logged at WARNING, never with a secret. Before any body is read, the
requests pass :class:`~.limits.BoundedRequests` (headers, size, rate); once the caller is known, its own
rate and its concurrent log follows are bounded (429) and ``info`` is answered from a short cache.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from airflow_nevermined_fl import __version__
from airflow_nevermined_fl.gateway.checks import Refusal, offers
from airflow_nevermined_fl.gateway.config import GatewayConfig, GatewayConfigError
from airflow_nevermined_fl.gateway.executions import Executions
from airflow_nevermined_fl.gateway.launchers import Launcher, get_launcher
from airflow_nevermined_fl.gateway.limits import (
    FLOOD_STATUSES,
    BoundedRequests,
    Cached,
    RateLimit,
    RefusalLog,
    Slots,
    released,
)
from airflow_nevermined_fl.gateway.nonces import NonceStore
from airflow_nevermined_fl.gateway.publish import asset_ddo, published_at
from airflow_nevermined_fl.gateway.resources import Provider
from airflow_nevermined_fl.protocol import API, auth

log = logging.getLogger(__name__)

BACKEND_CONN_ID = "nvfl_gateway_backend"
MAX_TAIL = 10_000
MAX_FOLLOWS = 8
"""Concurrent ``follow=true`` log streams per consumer."""
PER_CALLER_RATE, PER_CALLER_BURST = 20.0, 60.0
"""Signed requests per second per signer, and the burst allowed above it."""
INFO_SECONDS = 2.0
"""How long an ``info`` answer is served from cache."""
MAX_CONNECTIONS = 512
"""Concurrent connections (and tasks) the server takes; past it, 503."""


@dataclass(frozen=True)
class Signed:
    """An authenticated request: who signed it, and its body."""

    caller: str
    body: bytes


async def signed(request: Request) -> Signed:
    """The request's signer (401 when the signature does not hold) for this gateway, chain and URL as the
    audience; 429 past the signer's request rate."""
    body, state = await request.body(), request.app.state
    try:
        caller = await run_in_threadpool(
            auth.verify,
            request.headers,
            request.method,
            request.url.path,
            request.url.query,
            state.audience,
            body,
            state.nonces,
            state.config.auth_max_age,
        )
    except auth.AuthError as exc:
        raise Refusal(401, str(exc)) from None
    if not state.per_caller.allow(caller):
        raise Refusal(429, f"too many requests from {caller}; slow down")
    return Signed(caller, body)


Caller = Annotated[Signed, Depends(signed)]


def launcher_for(config: GatewayConfig) -> Launcher:
    """The configured backend: local processes under ``<state_dir>/workloads``, or the docker/kubernetes
    launcher on the connection of the gateway's config (put in the environment as an Airflow connection)."""
    if config.backend == "local":
        from airflow_nevermined_fl.gateway.launchers.local import LocalLauncher

        return LocalLauncher(root=config.state_dir / "workloads")
    conn_id = None
    if config.backend_connection is not None:
        os.environ[f"AIRFLOW_CONN_{BACKEND_CONN_ID.upper()}"] = json.dumps(config.backend_connection)
        conn_id = BACKEND_CONN_ID
    try:
        return get_launcher(config.backend, conn_id)
    except ValueError as exc:  # the backend's own config error, naming the field
        raise GatewayConfigError(f"backend.connection: {exc}") from None


def create_app(config: GatewayConfig) -> FastAPI:
    """The gateway of ``config``; its monitor (status and settlement) runs while the app is served."""
    provider = Provider(config)
    executions = Executions(provider, launcher_for(config))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        signer = await run_in_threadpool(provider.keeper.get_conn)  # fail at start on a wrong chain
        chain_id = await run_in_threadpool(lambda: signer.w3.eth.chain_id)
        app.state.audience = auth.Audience(chain_id, provider.address, config.url())
        stop = threading.Event()
        monitor = threading.Thread(
            target=executions.monitor, args=(stop,), name="gateway-monitor", daemon=True
        )
        monitor.start()
        log.info(
            "gateway %s for provider %s on the %s backend", config.name, provider.address, config.backend
        )
        try:
            yield
        finally:
            stop.set()
            monitor.join(timeout=10)
            app.state.nonces.close()

    app = FastAPI(title=f"nvfl gateway {config.name}", version=__version__, lifespan=lifespan)
    app.state.config, app.state.provider = config, provider
    app.state.nonces = NonceStore(config.state_dir / "nonces.sqlite")
    app.state.per_caller = RateLimit(rate=PER_CALLER_RATE, burst=PER_CALLER_BURST)
    follows = Slots(MAX_FOLLOWS, "log follows")
    app.add_middleware(BoundedRequests)

    flood_log = RefusalLog()

    @app.exception_handler(Refusal)
    async def refused(request: Request, exc: Refusal) -> JSONResponse:
        if exc.status in FLOOD_STATUSES:
            flood_log.note(exc.status, f"{request.method} {request.url.path}: {exc.detail}")
        else:
            log.warning(
                "refused %s %s (HTTP %d): %s", request.method, request.url.path, exc.status, exc.detail
            )
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)

    @app.exception_handler(Exception)
    async def failed(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)

    info_cache = Cached(INFO_SECONDS)

    @app.get(f"{API}/info")
    def info() -> dict[str, Any]:
        return info_cache.get(fresh_info, key=published_at(config))  # a publish shows at once

    def fresh_info() -> dict[str, Any]:
        healthy, running = executions.backend_healthy(), executions.running()
        # What would make an execute fail now makes every service not ready, before anyone pays for it.
        busy = None if running < config.max_executions else f"at capacity ({running} executions running)"
        down = None if healthy else f"the {config.backend} backend does not answer"
        services = []
        for o in offers(provider):
            reason = o.reason or down or busy
            services.append(
                {
                    "name": o.service.name,
                    "type": o.service.type,
                    "did": o.asset["did"] if o.asset else None,
                    "price": o.service.price,
                    "ready": reason is None,
                    "reason": reason,
                    "policy": o.service.policy.public(),
                }
            )
        return {
            "name": config.name,
            "provider": provider.address,
            "version": __version__,
            "chain_id": provider.chain_id,
            "services": services,
            "backend": {"type": config.backend, "healthy": healthy},
            "capacity": {
                "max_executions": config.max_executions,
                "max_executions_per_consumer": config.max_executions_per_consumer,
                "running": running,
            },
        }

    @app.get(f"{API}/ddo/{{did}}")
    def ddo(did: str) -> dict[str, Any]:
        doc = asset_ddo(config, did)
        if doc is None:
            raise Refusal(404, f"no asset DDO for {did} at this gateway")
        return doc

    @app.post(f"{API}/compute/execute/{{agreement_id}}")
    def execute(agreement_id: str, request: Caller) -> dict[str, Any]:
        try:
            body = json.loads(request.body or b"null")
        except ValueError:
            raise Refusal(400, "body: not JSON") from None
        try:
            return executions.execute(request.caller, agreement_id, body).status()
        finally:
            info_cache.clear()  # capacity may have changed

    @app.get(f"{API}/compute/status/{{agreement_id}}")
    def status(agreement_id: str, request: Caller) -> dict[str, Any]:
        return executions.authorized(request.caller, agreement_id).status()

    @app.get(f"{API}/compute/logs/{{agreement_id}}", response_model=None)
    def logs(
        agreement_id: str, request: Caller, tail: int = 100, follow: bool = False
    ) -> dict[str, str] | StreamingResponse:
        execution = executions.authorized(request.caller, agreement_id)
        if follow:
            follows.take(request.caller)
            lines = released(executions.follow(execution), lambda: follows.give(request.caller))
            return StreamingResponse(lines, media_type="text/plain")
        if not 1 <= tail <= MAX_TAIL:
            raise Refusal(400, f"tail: expected 1..{MAX_TAIL} lines, got {tail}")
        return {"logs": executions.logs(execution, tail)}

    @app.post(f"{API}/compute/stop/{{agreement_id}}")
    def stop(agreement_id: str, request: Caller) -> dict[str, Any]:
        try:
            return executions.stop(request.caller, agreement_id).status()
        finally:
            info_cache.clear()

    return app


def serve(config: GatewayConfig) -> None:
    """Serve the gateway (HTTPS with the configured certificate and key when TLS is configured)."""
    import uvicorn

    for where, path in (("tls_cert", config.tls_cert), ("tls_key", config.tls_key)):
        if path is not None and not path.is_file():
            raise GatewayConfigError(f"listen.{where}: {path} does not exist")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(
        create_app(config),
        host=config.host,
        port=config.port,
        ssl_certfile=str(config.tls_cert) if config.tls_cert else None,
        ssl_keyfile=str(config.tls_key) if config.tls_key else None,
        log_level="info",
        limit_concurrency=MAX_CONNECTIONS,
    )
