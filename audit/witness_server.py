"""The witness on HTTP: c2sp.org/tlog-witness ``add-checkpoint`` and the monitoring read.

Why a separate small app: a witness is meant to run somewhere else, by
someone else, next to nothing of Verdict's; it needs neither the gateway's
models nor its store, so it imports only the audit package.

Routes (submission prefix = monitoring prefix = the server root):

* ``POST /add-checkpoint``: the tlog-witness call. 200 with the cosignature
  line(s); 409 with ``text/x.tlog.size`` and the witness's size; 400, 403,
  404 and 422 with a one-line ``text/plain`` reason (see ``audit.witness``).
* ``GET /<origin hash>/checkpoint``: the spec's monitoring endpoint (origin
  hash = lower-case hex SHA-256 of the origin): the latest cosigned checkpoint
  with the log's and this witness's signatures; 404 if none.
* ``GET /checkpoint/<origin>``: the same, addressed by the URL-path-encoded
  origin (non-standard, easier to type).
* ``GET /healthz``: liveness.

Requests run the blocking witness logic (fsync) in worker threads; the
per-origin lock in ``Witness`` serialises them.
"""

from __future__ import annotations

import asyncio

from litestar import Litestar, Request, Response, get, post

from verdict.audit.witness import Conflict, Witness, WitnessError, origin_hash

__all__ = ["MAX_REQUEST_BYTES", "SIZE_MEDIA_TYPE", "create_app", "serve"]

SIZE_MEDIA_TYPE = "text/x.tlog.size"
NOTE_MEDIA_TYPE = "text/plain; charset=utf-8"
MAX_REQUEST_BYTES = 1 << 20  # 63 proof lines and a note with 100 signature lines fit many times over


def _witness(request: Request) -> Witness:
    return request.app.state.witness


def _text(content: str | bytes, status: int, media_type: str = NOTE_MEDIA_TYPE) -> Response[bytes]:
    data = content.encode("utf-8") if isinstance(content, str) else content
    # An explicit header, because Litestar appends "; charset=utf-8" to a bare text/* media type,
    # and the spec requires the 409 Content-Type to be exactly text/x.tlog.size.
    return Response(content=data, status_code=status, media_type=media_type, headers={"content-type": media_type})


@post("/add-checkpoint", status_code=200, request_max_body_size=MAX_REQUEST_BYTES)
async def add_checkpoint(request: Request) -> Response[bytes]:
    body = await request.body()
    try:
        lines = await asyncio.get_running_loop().run_in_executor(None, _witness(request).add_checkpoint, body)
    except Conflict as exc:
        return _text(f"{exc.current_size}\n", 409, SIZE_MEDIA_TYPE)
    except WitnessError as exc:
        return _text(f"{exc}\n", exc.status)
    return _text(lines, 200)


async def _latest(request: Request, origin: str) -> Response[bytes]:
    note = await asyncio.get_running_loop().run_in_executor(None, _witness(request).latest, origin)
    if note is None:
        return _text("this witness has not cosigned a checkpoint for that log\n", 404)
    return _text(note, 200)


@get("/{digest:str}/checkpoint")
async def checkpoint_by_hash(request: Request, digest: str) -> Response[bytes]:
    origins = {origin_hash(o): o for o in _witness(request).origins}
    origin = origins.get(digest)
    if origin is None:
        return _text("this witness has not cosigned a checkpoint for that log\n", 404)
    return await _latest(request, origin)


@get("/checkpoint/{origin:path}")
async def checkpoint_by_origin(request: Request, origin: str) -> Response[bytes]:
    # The ASGI path is already percent-decoded, so an origin's "/" (sent as %2F) arrives as "/".
    return await _latest(request, origin.removeprefix("/"))


@get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def create_app(witness: Witness) -> Litestar:
    app = Litestar(
        route_handlers=[add_checkpoint, checkpoint_by_hash, checkpoint_by_origin, healthz],
        openapi_config=None,
        request_max_body_size=MAX_REQUEST_BYTES,
    )
    app.state.witness = witness
    return app


def serve(witness: Witness, host: str = "127.0.0.1", port: int = 7380) -> None:
    """Run the witness until interrupted (uvicorn, as ``verdict serve`` runs the gateway)."""
    # lazy: uvicorn only to serve; tests and callers use create_app in process
    import uvicorn

    uvicorn.run(create_app(witness), host=host, port=port, log_level="warning", timeout_graceful_shutdown=10)
