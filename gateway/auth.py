"""Bearer API-key authentication with scopes, as a Litestar guard.

Scopes: ``score`` (make decisions), ``explain`` (GDPR lookups), ``replay``
(examiners), ``admin`` (everything). The authenticated key id is kept on the
connection so lookups can record who looked.
"""

from __future__ import annotations

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

from verdict.gateway.apikeys import ApiKey, ApiKeyStore

__all__ = ["authenticated_key", "require_scope"]


def _authenticate(connection: ASGIConnection) -> ApiKey:
    store: ApiKeyStore = connection.app.state.apikeys
    header = connection.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise NotAuthorizedException("send an API key as 'Authorization: Bearer <key>'")
    key = store.authenticate(token.strip())
    if key is None:
        raise NotAuthorizedException("the API key is not valid")
    return key


def require_scope(scope: str):  # noqa: ANN201 - Litestar guard
    # A coroutine, so Litestar runs it on the event loop: the check is a header
    # split, one SHA-256 and one stat(2), cheaper than a hop to a worker thread.
    async def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        key = _authenticate(connection)
        if scope not in key.scopes and "admin" not in key.scopes:
            raise PermissionDeniedException(f"this API key lacks the '{scope}' scope (it has: {', '.join(key.scopes)})")
        connection.state.api_key = key

    return guard


def authenticated_key(connection: ASGIConnection) -> ApiKey:
    return connection.state.api_key
