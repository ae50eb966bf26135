"""The API's documentation pages (Redoc, Swagger UI), served whole by the gateway itself.

Why vendored: Litestar's pages load their scripts, styles, fonts and favicon
from public CDNs, so on a bank's network, which reaches no CDN, they were
blank. The renderers' release files are kept under ``data/openapi-ui/`` (with
their licences; data/openapi-ui/README.md says where they came from and how to
update them) and served from ``{schema path}/assets/...``: a page references
only the gateway's own URLs.

Only the files a page loads are served, from a table made at import, so no
request path ever reaches the file system.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from importlib import resources

from litestar import Response, Router, get
from litestar.exceptions import NotFoundException
from litestar.openapi.plugins import (
    JsonRenderPlugin,
    OpenAPIRenderPlugin,
    RedocRenderPlugin,
    SwaggerRenderPlugin,
    YamlRenderPlugin,
)

__all__ = ["ASSETS", "REDOC", "SWAGGER_UI", "docs_router", "render_plugins"]

SWAGGER_UI = "swagger-ui-dist-5.35.0"
REDOC = "redoc-2.5.2"

ASSETS: dict[tuple[str, str], str] = {
    (SWAGGER_UI, "swagger-ui-bundle.js"): "text/javascript; charset=utf-8",
    (SWAGGER_UI, "swagger-ui-standalone-preset.js"): "text/javascript; charset=utf-8",
    (SWAGGER_UI, "swagger-ui.css"): "text/css; charset=utf-8",
    (REDOC, "redoc.standalone.js"): "text/javascript; charset=utf-8",
}
"""(package, file) -> media type: everything the pages load, nothing else."""

_ASSETS_PATH = "/assets"
_NO_FAVICON = "<link rel='icon' href='data:,'>"  # the default one is on a CDN; this one asks for nothing
_A_DAY = "public, max-age=86400"  # the files of a package version never change


@cache
def _asset_bytes(package: str, name: str) -> bytes:
    return (resources.files("verdict.gateway") / "data" / "openapi-ui" / package / name).read_bytes()


@get(f"{_ASSETS_PATH}/{{package:str}}/{{name:str}}", include_in_schema=False, sync_to_thread=False)
def docs_asset(package: str, name: str) -> Response[bytes]:
    """One vendored file of a documentation page (404 for anything else)."""
    media_type = ASSETS.get((package, name))
    if media_type is None:
        raise NotFoundException(f"no documentation asset {package}/{name}")
    return Response(_asset_bytes(package, name), media_type=media_type, headers={"Cache-Control": _A_DAY})


def render_plugins(schema_path: str) -> Sequence[OpenAPIRenderPlugin]:
    """Redoc at ``{schema_path}`` and ``/redoc``, Swagger UI (try it out, with an API key)
    at ``/swagger``, and the document as JSON and YAML; each page's assets from the gateway."""
    assets = f"{schema_path.rstrip('/')}{_ASSETS_PATH}"
    return (
        RedocRenderPlugin(
            path=["/", "/redoc"],
            js_url=f"{assets}/{REDOC}/redoc.standalone.js",
            google_fonts=False,
            favicon=_NO_FAVICON,
        ),
        SwaggerRenderPlugin(
            path="/swagger",
            js_url=f"{assets}/{SWAGGER_UI}/swagger-ui-bundle.js",
            css_url=f"{assets}/{SWAGGER_UI}/swagger-ui.css",
            standalone_preset_js_url=f"{assets}/{SWAGGER_UI}/swagger-ui-standalone-preset.js",
            favicon=_NO_FAVICON,
        ),
        JsonRenderPlugin(),
        YamlRenderPlugin(),
    )


def docs_router(schema_path: str) -> Router:
    """The router the documentation is served from; the render plugins' pages join it."""
    return Router(schema_path, route_handlers=[docs_asset], include_in_schema=False)
