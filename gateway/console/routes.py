"""The console's routes under ``/console``: thin handlers from a signed-in session to a page.

Every handler does the same three things: find the session (or send the browser to
sign in), call the same service the API calls (so a page view of a decision is
recorded in the audit trail exactly like an API lookup: who, when, which decision),
and render a template. Forms post (no JavaScript needed); each form carries the
session's CSRF token, and a post whose token or Origin is wrong changes nothing.

Responses that show personal data are never cached (``Cache-Control: no-store``),
and every page forbids framing, inline script and foreign origins (CSP).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar, TypeVarTuple
from urllib.parse import quote, urlsplit

from litestar import MediaType, Request, Response, Router, get, post
from litestar.datastructures import Cookie
from litestar.exceptions import NotFoundException
from litestar.response import Redirect

from verdict.gateway.apikeys import ApiKey
from verdict.gateway.console.decision_page import decision_page, failed_check
from verdict.gateway.console.inventory import model_detail, model_inventory
from verdict.gateway.console.render import STATIC, render_page, trusted_svg
from verdict.gateway.console.replay_page import replay_form_request, replay_report_page
from verdict.gateway.console.sessions import ConsoleSession, SessionStore, new_token, same_token
from verdict.gateway.console.trail_health import trail_health
from verdict.gateway.monitoring_report import report_body
from verdict.gateway.registry import UnknownModel
from verdict.gateway.replay_reads import may_read, read_replay
from verdict.gateway.request_context import off_loop
from verdict.gateway.service_errors import (
    AuditUnavailable,
    DecisionErased,
    InputsSealed,
    RecordInvalid,
    ServiceError,
    UnknownDecision,
)
from verdict.replay.service import ReplayBusy, ReplayRequestError, ReplayService, UnknownReplay

__all__ = ["ConsoleRefusal", "console_router"]

COOKIE = "verdict_console"
SIGN_IN_COOKIE = "verdict_console_sign_in"
PATH = "/console"
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # "no-referrer" would make browsers post forms with "Origin: null"
}
NAV = (
    ("decisions", "Decisions", "/console/decisions"),
    ("replays", "Replays", "/console/replays"),
    ("trail", "Trail health", "/console/trail"),
    ("models", "Models", "/console/models"),
    ("monitoring", "Monitoring", "/console/monitoring"),
)

MONITOR_WAIT_S = 0.1
"""How long a monitoring page waits for the fold it started: new records are folded in well
under this; a long fold (the first on a large trail) goes on in the background."""

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")


class ConsoleRefusal(Exception):
    """A page answered with something else (sign in first, not allowed, bad form): its response."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def _refusal_handler(_: Request, exc: ConsoleRefusal) -> Response:
    return exc.response


def _sessions(request: Request) -> SessionStore:
    return request.app.state.console_sessions


def _services(request: Request) -> Any:
    return request.app.state.services


def _run(request: Request, fn: Callable[[*_Ts], _T], *args: *_Ts) -> Any:
    return off_loop(request.app.state.io_pool, fn, *args)


def _html(body: str, status: int = 200, cookies: list[Cookie] | None = None) -> Response:
    return Response(
        content=body, media_type=MediaType.HTML, status_code=status, headers=SECURITY_HEADERS, cookies=cookies or []
    )


def _cookie(request: Request, name: str, value: str, *, max_age: int | None = None) -> Cookie:
    """HttpOnly, SameSite=Strict, scoped to the console; Secure whenever the page came over TLS."""
    return Cookie(
        key=name,
        value=value,
        path=PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        max_age=max_age,
    )


def _safe_next(target: str | None) -> str:
    """Only a console path (never another site: an open redirect would make the sign-in page a phishing aid)."""
    if not target:
        return f"{PATH}/decisions"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith(f"{PATH}/") or "//" in parts.path:
        return f"{PATH}/decisions"
    return target


def _page(
    request: Request, session: ConsoleSession, template: str, nav: str, code: int = 200, **context: Any
) -> Response:
    body = render_page(template, session=session, nav=NAV, current=nav, **context)
    return _html(body, code)


def _signed_in(request: Request, scope: str | None = None) -> ConsoleSession:
    session = _sessions(request).current(request.cookies.get(COOKIE))
    if session is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise ConsoleRefusal(Redirect(f"{PATH}/sign-in?next={quote(target, safe='/')}", status_code=303))
    if scope is not None and not session.may(scope):
        body = render_page(
            "refused.html",
            session=session,
            nav=NAV,
            current="",
            title="Not allowed",
            message=(
                f"This page needs an API key with the '{scope}' scope; the key you signed in with "
                f"({session.key_name or session.key_id}) has: {', '.join(session.scopes)}."
            ),
        )
        raise ConsoleRefusal(_html(body, 403))
    return session


async def _form(request: Request) -> dict[str, str]:
    form = await request.form()
    return {k: str(v) for k, v in form.items()}


def _same_origin(request: Request) -> bool:
    """A browser names the page a form was posted from; it must be this console's own host."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None  # an opaque origin (a sandboxed frame, a data: URL) is never ours
    return urlsplit(origin).netloc == request.headers.get("host", "")


def _checked_post(request: Request, session: ConsoleSession, form: dict[str, str]) -> None:
    if not _same_origin(request) or not same_token(session.csrf, form.get("csrf")):
        body = render_page(
            "refused.html",
            session=session,
            nav=NAV,
            current="",
            title="Form refused",
            message="This form was not sent from a page of this console (its security token is missing or wrong), "
            "so nothing was done. Go back, reload the page and try again.",
        )
        raise ConsoleRefusal(_html(body, 403))


# --- sign in and out ------------------------------------------------------------------------------------------------


@get("/", include_in_schema=False)
async def home(request: Request) -> Redirect:
    signed_in = _sessions(request).current(request.cookies.get(COOKIE)) is not None
    return Redirect(f"{PATH}/decisions" if signed_in else f"{PATH}/sign-in", status_code=303)


def _sign_in_page(request: Request, *, error: str = "", notice: str = "", status: int = 200) -> Response:
    token = new_token()
    body = render_page(
        "sign_in.html",
        session=None,
        nav=NAV,
        current="",
        csrf=token,
        next=_safe_next(request.query_params.get("next")),
        error=error,
        notice=notice,
    )
    return _html(body, status, cookies=[_cookie(request, SIGN_IN_COOKIE, token, max_age=3600)])


@get("/sign-in", include_in_schema=False)
async def sign_in_form(request: Request) -> Response:
    notice = "You are signed out." if request.query_params.get("signed_out") else ""
    if request.query_params.get("expired"):
        notice = "Your session ended. Sign in again."
    return _sign_in_page(request, notice=notice)


@post("/sign-in", include_in_schema=False, status_code=303)
async def sign_in(request: Request) -> Response:
    form = await _form(request)
    if not _same_origin(request) or not same_token(request.cookies.get(SIGN_IN_COOKIE), form.get("csrf")):
        return _sign_in_page(request, error="The sign-in form expired or came from elsewhere. Try again.", status=403)
    signed = _sessions(request).sign_in(form.get("api_key", ""))
    if signed is None:
        return _sign_in_page(request, error="That API key is not valid.", status=401)
    token, _ = signed
    return Redirect(
        _safe_next(form.get("next")),
        status_code=303,
        cookies=[_cookie(request, COOKIE, token), _cookie(request, SIGN_IN_COOKIE, "", max_age=0)],
    )


@post("/sign-out", include_in_schema=False, status_code=303)
async def sign_out(request: Request) -> Response:
    session = _signed_in(request)
    _checked_post(request, session, await _form(request))
    _sessions(request).sign_out(request.cookies.get(COOKIE))
    return Redirect(f"{PATH}/sign-in?signed_out=1", status_code=303, cookies=[_cookie(request, COOKIE, "", max_age=0)])


# --- decisions ------------------------------------------------------------------------------------------------------


@get("/decisions", include_in_schema=False)
async def decisions(request: Request) -> Response:
    session = _signed_in(request, "explain")
    request_id = (request.query_params.get("request_id") or "").strip()
    if request_id:
        return Redirect(f"{PATH}/decisions/{quote(request_id, safe='')}", status_code=303)
    return _page(request, session, "decisions.html", "decisions")


@get("/decisions/{request_id:str}", include_in_schema=False)
async def decision(request: Request, request_id: str) -> Response:
    session = _signed_in(request, "explain")
    services = _services(request)
    try:
        view, attributes = await _run(request, services.lookups.decision_with_inputs, request_id, session.key_id)
    except RecordInvalid as exc:
        reason = exc.detail
        return _page(
            request,
            session,
            "decision_failed.html",
            "decisions",
            200,
            request_id=request_id,
            check=failed_check(request_id, reason),
        )
    except (UnknownDecision, DecisionErased, InputsSealed, AuditUnavailable) as exc:
        status = {UnknownDecision: 404, DecisionErased: 410, InputsSealed: 409, AuditUnavailable: 503}[type(exc)]
        return _page(request, session, "decisions.html", "decisions", status, request_id=request_id, error=exc.detail)
    manifest = await _run(request, services.models.manifest, view.model["name"], view.model["version"])
    page = decision_page(view, attributes, manifest)
    return _page(request, session, "decision.html", "decisions", page=page, chart=trusted_svg(page.chart_svg))


@post("/subjects", include_in_schema=False)
async def subject(request: Request) -> Response:
    """By subject, posted (never in a URL: a subject id must not reach access logs or browser history)."""
    session = _signed_in(request, "explain")
    form = await _form(request)
    _checked_post(request, session, form)
    subject_id = form.get("subject_id", "").strip()
    if not subject_id or len(subject_id) > 128:
        return _page(
            request,
            session,
            "decisions.html",
            "decisions",
            400,
            subject_error="Enter a subject id of 1 to 128 characters.",
        )
    try:
        found = await _run(request, _services(request).lookups.subject_decisions, subject_id, session.key_id)
    except ServiceError as exc:
        return _page(
            request,
            session,
            "decisions.html",
            "decisions",
            503 if isinstance(exc, AuditUnavailable) else 409,
            subject_error=exc.detail,
        )
    return _page(request, session, "subject.html", "decisions", found=found)


# --- replays --------------------------------------------------------------------------------------------------------


def _replays(request: Request) -> ReplayService | None:
    return _services(request).replays


@get("/replays", include_in_schema=False)
async def replays(request: Request) -> Response:
    session = _signed_in(request, "replay")
    service = _replays(request)
    key = _key(request, session)
    mine = [s for s in service.statuses() if may_read(s, key)] if service is not None else []
    return _page(
        request, session, "replays.html", "replays", replays=mine, available=service is not None, form={}, errors={}
    )


def _key(request: Request, session: ConsoleSession) -> ApiKey:
    key = request.app.state.apikeys.find(session.key_id)
    if key is None:  # removed since this request's session check: the session ends with it
        raise ConsoleRefusal(Redirect(f"{PATH}/sign-in?expired=1", status_code=303))
    return key


@post("/replays", include_in_schema=False)
async def start_replay(request: Request) -> Response:
    session = _signed_in(request, "replay")
    form = await _form(request)
    _checked_post(request, session, form)
    service = _replays(request)
    errors: dict[str, str] = {}
    if service is None:
        errors["form"] = "Replays are not available on this gateway (it runs without an audit trail)."
    else:
        try:
            replay_request = replay_form_request(form)
            status = await _run(request, service.start_replay, replay_request, session.key_id)
            return Redirect(f"{PATH}/replays/{status.replay_id}", status_code=303)
        except ReplayRequestError as exc:
            errors[exc.field] = str(exc)
        except ReplayBusy as exc:
            errors["form"] = exc.detail
    key = _key(request, session)
    mine = [s for s in service.statuses() if may_read(s, key)] if service is not None else []
    return _page(
        request,
        session,
        "replays.html",
        "replays",
        400,
        replays=mine,
        available=service is not None,
        form=form,
        errors=errors,
    )


async def _replay_read(request: Request, session: ConsoleSession, replay_id: str, resource: str) -> Any:
    service = _replays(request)
    if service is None:
        raise NotFoundException("replays are not available on this gateway")
    try:
        return await _run(
            request, read_replay, service, _services(request).lookups, replay_id, _key(request, session), resource
        )
    except UnknownReplay as exc:
        raise ConsoleRefusal(
            _page(request, session, "refused.html", "replays", 404, title="No such replay", message=exc.detail)
        ) from None


@get("/replays/{replay_id:str}", include_in_schema=False)
async def replay(request: Request, replay_id: str) -> Response:
    session = _signed_in(request, "replay")
    status = await _replay_read(request, session, replay_id, "status")
    report = None
    if status.report_object_key is not None:
        envelope = await _replay_read(request, session, replay_id, "report.json")
        report = replay_report_page(envelope)
    return _page(
        request,
        session,
        "replay.html",
        "replays",
        status=status,
        report=report,
        chart=trusted_svg(report.chart_svg) if report else "",
    )


@get("/replays/{replay_id:str}/report.json", include_in_schema=False)
async def replay_report(request: Request, replay_id: str) -> Response:
    session = _signed_in(request, "replay")
    envelope = await _replay_read(request, session, replay_id, "report.json")
    headers = {**SECURITY_HEADERS, "Content-Disposition": f'attachment; filename="{replay_id}.signed.json"'}
    return Response(content=envelope, media_type=MediaType.JSON, headers=headers)


# --- the trail, models, monitoring (no personal data: any signed-in key) ------------------------------------------


@get("/trail", include_in_schema=False)
async def trail(request: Request) -> Response:
    session = _signed_in(request)
    lookups = _services(request).lookups
    health = await _run(request, trail_health, lookups.store, lookups.trust)
    return _page(request, session, "trail.html", "trail", health=health)


@get("/models", include_in_schema=False)
async def models(request: Request) -> Response:
    session = _signed_in(request)
    services = _services(request)
    found = await _run(
        request, partial(model_inventory, services.models.registry, services.models, trust=services.lookups.trust)
    )
    return _page(request, session, "models.html", "models", models=found)


@get("/models/{name:str}/{version:str}", include_in_schema=False)
async def model(request: Request, name: str, version: str) -> Response:
    session = _signed_in(request)
    services = _services(request)
    try:
        detail = await _run(
            request,
            partial(
                model_detail, services.models.registry, name, version, services.models, trust=services.lookups.trust
            ),
        )
    except UnknownModel as exc:
        return _page(request, session, "refused.html", "models", 404, title="No such model version", message=str(exc))
    return _page(request, session, "model.html", "models", d=detail)


@get("/monitoring", include_in_schema=False)
async def monitoring(request: Request) -> Response:
    """Never waits for a fold: a page view starts one if none is running and shows the
    figures as of the last one (gateway.monitoring folds only what is new)."""
    session = _signed_in(request)
    monitor = _services(request).monitor
    if monitor is None:
        return _page(
            request, session, "refused.html", "monitoring", 404, title="Monitoring", message="Monitoring is off."
        )
    started = monitor.refresh_in_background(0)
    if started:
        await _run(request, monitor.wait_background, MONITOR_WAIT_S)
    summary = monitor.summary()
    return _page(
        request,
        session,
        "monitoring.html",
        "monitoring",
        summary=summary,
        refreshing=monitor.refreshing,
        body=trusted_svg(report_body(summary)),
    )


# --- assets ---------------------------------------------------------------------------------------------------------


@get("/static/{name:str}", include_in_schema=False)
async def static(name: str) -> Response:
    path = STATIC / name
    if "/" in name or not path.is_file():
        raise NotFoundException(f"no console asset {name!r}")
    media = {"css": "text/css; charset=utf-8", "svg": "image/svg+xml"}.get(
        path.suffix.lstrip("."), "application/octet-stream"
    )
    return Response(content=path.read_bytes(), media_type=media, headers={"Cache-Control": "max-age=3600"})


def console_router() -> Router:
    return Router(
        path=PATH,
        route_handlers=[
            home,
            sign_in_form,
            sign_in,
            sign_out,
            decisions,
            decision,
            subject,
            replays,
            start_replay,
            replay,
            replay_report,
            trail,
            models,
            model,
            monitoring,
            static,
        ],
        exception_handlers={ConsoleRefusal: _refusal_handler},
        include_in_schema=False,
    )
