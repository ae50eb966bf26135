"""The console in a real browser: Debian's Chromium, driven by Playwright.

A pytest plugin (tests/conftest.py) so that every test directory shares one browser per
worker process. The browser is the system one, ``/usr/bin/chromium`` from Debian's
``chromium`` package, which ``make test`` installs; nothing is downloaded at test time
(Playwright's wheel carries its driver only; ``playwright install`` is never run).

Fixtures
* ``browser``   session: one headless Chromium per worker process, launched on first use
                (so ``-n 2 --dist loadfile`` starts one only in a worker that needs it).
* ``new_page``  function: ``new_page(**context_options) -> Page``, each call in a fresh
                browser context (its own cookies and storage: two calls are two people);
                every context is closed after the test.
* ``page``      function: ``new_page()``.

Helpers: ``axe_violations`` / ``assert_accessible`` (axe-core's WCAG 2.0 and 2.1 A/AA
rules), ``keyboard_reachable`` (does Tab ever reach the element?), ``screenshot`` (a
full-page PNG) and ``launch`` (the same browser outside pytest, for the screenshots script).

Without the browser the tests are skipped, with the reason, on a developer's machine; on
CI (``CI`` set) they fail: the console must be tested there.

Playwright's sync API marks its event loop as the thread's running loop for as long as
the browser lives, and ``asyncio.run`` refuses to start under it. So that the rest of the
worker's tests keep ``asyncio.run``, the hooks below hand the loop back to Playwright only
for the tests that use ``browser`` (directly or through a fixture) and for the teardown of
each file's last test. The price: a test that uses the browser, the fixtures first set up
for it, and the teardown of a file's last test cannot run an event loop of their own in
the main thread (use a thread or a synchronous client there).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page, Playwright

__all__ = [
    "AXE_TAGS",
    "AXE_VERSION",
    "CHROMIUM",
    "CHROMIUM_ARGS",
    "assert_accessible",
    "axe_violations",
    "browser",
    "keyboard_reachable",
    "launch",
    "missing_browser",
    "new_page",
    "page",
    "require_browser",
    "screenshot",
]

CHROMIUM = Path("/usr/bin/chromium")
"""Debian's launcher script (package ``chromium``); what ``make browser`` installs."""

CHROMIUM_ARGS = (
    "--no-sandbox",  # tests may run as root (CI does), where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-dev-shm-usage",  # containers' /dev/shm is often 64 MiB: Chromium crashes in it
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--no-proxy-server",  # the pages are on loopback; nothing goes through a proxy from the environment
)
"""Headless and offline: the browser talks to the gateway under test and nothing else.
Each launch gets a fresh, temporary profile (Playwright's own user-data-dir, removed on close)."""

AXE_DIR = Path(__file__).resolve().parent / "axe"
AXE_VERSION = "4.14.1"
"""Vendored from npm (tests/support/axe/README.md); never loaded from a CDN."""

AXE_TAGS = ("wcag2a", "wcag2aa", "wcag21a", "wcag21aa")
"""The WCAG 2.0 and 2.1 level A and AA rules; best-practice rules (not WCAG) are left out."""

DEFAULT_CONTEXT: dict[str, Any] = {"viewport": {"width": 1280, "height": 800}, "reduced_motion": "reduce"}
"""A desktop window; no animations, so screenshots are the same each time."""


def missing_browser() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if not CHROMIUM.exists():
        return f"Debian's Chromium is not installed ({CHROMIUM}): `make test` installs it (apt-get install chromium chromium-driver)"
    try:
        # lazy: only the browser tests need Playwright, so only they fail without it
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed in this virtualenv: `make test` installs it from requirements-dev.lock"
    return None


def launch(playwright: Playwright) -> Browser:
    """The system Chromium, headless, as the tests use it (also for scripts outside pytest)."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=list(CHROMIUM_ARGS))


class _Chromium:
    """One worker's browser, and the event loop Playwright drives it from (see the module docstring)."""

    def __init__(self) -> None:
        # lazy: only the browser tests need Playwright (0.1 s to import in every worker otherwise)
        from playwright.sync_api import sync_playwright

        self.playwright = sync_playwright().start()
        try:
            self.browser = launch(self.playwright)
        except BaseException:
            self.playwright.stop()
            raise
        self.loop = asyncio.get_running_loop()  # Playwright's, marked running between its calls

    def attach(self) -> None:
        """Give the thread's running loop back to Playwright (its next call needs it)."""
        if not self.loop.is_closed():
            asyncio._set_running_loop(self.loop)

    def detach(self) -> None:
        """No running loop while a test without the browser runs, so that ``asyncio.run`` works."""
        if asyncio._get_running_loop() is self.loop:
            asyncio._set_running_loop(None)

    def close(self) -> None:
        self.attach()
        try:
            self.browser.close()
        finally:
            self.playwright.stop()


_CHROMIUM = pytest.StashKey[_Chromium]()


def _hand_over(item: pytest.Item, *, to_browser: bool) -> None:
    chromium = item.config.stash.get(_CHROMIUM, None)
    if chromium is None:
        return
    if to_browser:
        chromium.attach()
    else:
        chromium.detach()


def _uses_browser(item: pytest.Item) -> bool:
    """Through any fixture: ``fixturenames`` is the closure of everything the test requests."""
    return "browser" in getattr(item, "fixturenames", ())


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    _hand_over(item, to_browser=_uses_browser(item))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    _hand_over(item, to_browser=_uses_browser(item))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    # A module's (or the session's) browser fixtures close in the teardown of the module's
    # last test, which need not use them.
    last_of_file = nextitem is None or nextitem.path != item.path
    _hand_over(item, to_browser=_uses_browser(item) or last_of_file)


def require_browser() -> None:
    """Skip without the browser, with the reason; fail instead on CI (``CI`` set)."""
    reason = missing_browser()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must run the browser tests", pytrace=False)
        pytest.skip(reason)


@pytest.fixture(scope="session")
def browser(pytestconfig: pytest.Config) -> Iterator[Browser]:
    require_browser()
    chromium = _Chromium()
    pytestconfig.stash[_CHROMIUM] = chromium
    try:
        yield chromium.browser
    finally:
        del pytestconfig.stash[_CHROMIUM]
        chromium.close()


@pytest.fixture
def new_page(browser: Browser) -> Iterator[Callable[..., Page]]:
    contexts: list[BrowserContext] = []

    def open_page(**context_options: Any) -> Page:
        """A page in a fresh context: no cookies, no storage (``base_url=...`` and other options pass through)."""
        context = browser.new_context(**{**DEFAULT_CONTEXT, **context_options})
        contexts.append(context)
        return context.new_page()

    yield open_page
    for context in contexts:
        context.close()


@pytest.fixture
def page(new_page: Callable[..., Page]) -> Page:
    return new_page()


_AXE_RUN = """async (options) => {
  const results = await axe.run(document, options);
  return results.violations.map((v) => ({
    id: v.id,
    impact: v.impact,
    help: v.help,
    targets: v.nodes.map((node) => node.target.map((t) => (Array.isArray(t) ? t.join(" >>> ") : t)).join(" >> ")),
  }));
}"""


_SCRIPTING_ENABLED = """() => {
  const probe = document.createElement("div");
  probe.innerHTML = "<noscript><p></p></noscript>";
  return probe.querySelector("noscript p") === null;
}"""
"""Does the page run its scripts? (HTML parses <noscript> as markup only where scripting is off.)"""


def _load_axe(page: Page) -> None:
    """Put axe-core into the page, once per document.

    Why not ``page.add_script_tag``: it adds an inline script, which a page's
    Content-Security-Policy (script-src 'self') rightly refuses; a script evaluated
    through the DevTools protocol is not subject to it, and the page's CSP stays on.
    """
    if not page.evaluate(_SCRIPTING_ENABLED):
        # axe waits on timers, which never fire in a page without JavaScript: it would hang.
        raise RuntimeError(
            "axe-core needs JavaScript: check accessibility in a page with it on (new_page()), "
            "and what works without it in one with it off (new_page(java_script_enabled=False))"
        )
    if not page.evaluate("typeof window.axe === 'object'"):
        page.evaluate((AXE_DIR / "axe.min.js").read_text(encoding="utf-8") + "\n;undefined")


def axe_violations(page: Page, impacts: Sequence[str] = ("serious", "critical")) -> list[dict[str, Any]]:
    """axe-core's WCAG 2 A/AA violations of the page as it is now, of the given impacts.

    Each: ``id`` (the rule), ``impact``, ``help`` (one sentence) and ``targets`` (a CSS
    selector per failing element).
    """
    _load_axe(page)
    options = {"runOnly": {"type": "tag", "values": list(AXE_TAGS)}, "resultTypes": ["violations"]}
    violations: list[dict[str, Any]] = page.evaluate(_AXE_RUN, options)
    return [v for v in violations if v["impact"] in impacts]


def assert_accessible(page: Page, impacts: Sequence[str] = ("serious", "critical")) -> None:
    """Fail, listing them, when axe-core finds violations of these impacts (issue 20, item 7)."""
    violations = axe_violations(page, impacts)
    if violations:
        lines = [f"  {v['id']} [{v['impact']}] {v['help']}: {', '.join(v['targets'])}" for v in violations]
        raise AssertionError(
            f"axe-core {AXE_VERSION} found {len(violations)} {'/'.join(impacts)} WCAG A/AA violation(s) on {page.url}:\n"
            + "\n".join(lines)
        )


_KEYBOARD_START = """() => {
  window.__keyboardSeen = new WeakSet();
  const start = document.createElement("span");
  start.id = "__keyboard-start";
  start.tabIndex = -1;
  document.body.prepend(start);
  start.focus();
}"""

_KEYBOARD_STEP = """(targets) => {
  document.getElementById("__keyboard-start")?.remove();
  const active = document.activeElement;
  if (!active || active === document.body || active === document.documentElement) return "left";
  if (targets.includes(active)) return "reached";
  if (window.__keyboardSeen.has(active)) return "seen";
  window.__keyboardSeen.add(active);
  return "moved";
}"""


def keyboard_reachable(page: Page, selector: str, max_tabs: int = 300) -> bool:
    """Does pressing Tab from the top of the page ever focus an element ``selector`` matches?

    The real keyboard: the browser's own focus order, so hidden, disabled and
    non-focusable elements are skipped as a keyboard user finds them. Stops once focus
    comes round to an element it has seen (one pass through the browser's own UI allowed).
    """
    page.evaluate(_KEYBOARD_START)
    targets = page.locator(selector)
    left = 0
    for _ in range(max_tabs):
        page.keyboard.press("Tab")
        where = targets.evaluate_all(_KEYBOARD_STEP)
        if where == "reached":
            return True
        if where == "seen" or (where == "left" and (left := left + 1) > 1):
            return False
    return False


def screenshot(page: Page, path: Path) -> Path:
    """A full-page PNG of the page as it is now, at ``path`` (folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True, animations="disabled", caret="hide")
    return path
