"""Pages from templates: one Jinja environment, escaping everything, failing on a typo.

Why Jinja directly and not through the framework's template response: a page is a
plain function of its data (tests and the screenshot script render the same bytes),
and the HTTP layer stays thin. Autoescape is on for every template: every value on
these pages can come from an applicant, a manifest or a caller. ``StrictUndefined``
makes a misspelt name an error in the tests instead of an empty cell in front of an
examiner.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

__all__ = ["STATIC", "render_page", "trusted_svg"]

TEMPLATES = Path(__file__).with_name("templates")
STATIC = Path(__file__).with_name("static")


def when(timestamp: str | None) -> str:
    """An RFC 3339 time as people read it, in UTC and ISO order (unambiguous in every country)."""
    if not timestamp:
        return "—"
    try:
        moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return timestamp
    if moment.utcoffset() == timedelta(0):
        return moment.strftime("%Y-%m-%d %H:%M:%S UTC")
    return moment.isoformat(sep=" ", timespec="seconds")


def number(value: float | int | None, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}g}"


def trusted_svg(svg: str) -> Markup:
    """Mark SVG text built by our own chart functions (which escape every text they draw) as safe."""
    return Markup(svg)


_ENV = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_ENV.filters["when"] = when
_ENV.filters["number"] = number


def render_page(name: str, **context: Any) -> str:
    return _ENV.get_template(name).render(**context)
