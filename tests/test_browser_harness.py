"""The browser harness itself (tests/support/browser.py): it drives Debian's Chromium,
and its checks catch what they are for, so a console test that passes means something.

Pages are set in place (``page.set_content``): no server, one browser for the file.
The order matters: the asyncio test runs between browser tests, and the last test does
not use the browser (the browser closes in its teardown), on purpose.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.support import browser as harness
from tests.support.browser import assert_accessible, axe_violations, keyboard_reachable, screenshot

GOOD = """<!doctype html>
<html lang="en">
<head>
  <meta http-equiv="Content-Security-Policy" content="default-src 'self'; script-src 'self'">
  <title>Look up a decision</title>
</head>
<body>
  <main>
    <h1>Look up a decision</h1>
    <form method="post">
      <label for="request-id">Request id</label>
      <input id="request-id" name="request_id">
      <button type="submit">Look up</button>
    </form>
    <div id="not-a-button" onclick="void 0">Looks like a button</div>
    <button id="hidden" hidden>Hidden</button>
  </main>
</body>
</html>"""
"""Labelled, titled, in a language, black on white; under a CSP that refuses inline scripts."""

BAD = """<!doctype html>
<html lang="en">
<head><title>Bad</title></head>
<body>
  <main>
    <p id="faint" style="color: #d0d0d0; background: #ffffff">Declined: insufficient income</p>
    <input id="unlabelled" name="request_id">
  </main>
</body>
</html>"""
"""Light grey on white (contrast about 1.5:1) and an input without a label."""


def test_a_page_without_faults_has_no_violations_even_under_a_strict_csp(page):
    page.set_content(GOOD)
    assert page.evaluate("navigator.userAgent").find("HeadlessChrome/") > 0
    assert axe_violations(page, impacts=("minor", "moderate", "serious", "critical")) == []
    assert_accessible(page)


def test_low_contrast_and_an_unlabelled_input_are_reported(page):
    page.set_content(BAD)
    found = {v["id"]: v for v in axe_violations(page)}
    assert found["color-contrast"]["impact"] == "serious"
    assert found["color-contrast"]["targets"] == ["#faint"]
    assert found["label"]["impact"] in ("serious", "critical")
    assert found["label"]["targets"] == ["#unlabelled"]
    with pytest.raises(AssertionError, match=r"color-contrast \[serious\].*#faint") as failure:
        assert_accessible(page)
    assert "#unlabelled" in str(failure.value)


def test_keyboard_reaches_a_button_and_not_a_div_or_a_hidden_button(page):
    page.set_content(GOOD)
    assert keyboard_reachable(page, "button[type=submit]")
    assert keyboard_reachable(page, "#request-id")
    assert not keyboard_reachable(page, "#not-a-button")
    assert not keyboard_reachable(page, "#hidden")
    assert not keyboard_reachable(page, "#no-such-element")


def test_asyncio_run_works_in_a_test_without_the_browser_after_one_with_it():
    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    assert asyncio.run(answer()) == 42


def test_each_page_gets_fresh_cookies_and_the_browser_still_answers_after_asyncio(new_page):
    first = new_page()
    first.context.add_cookies([{"name": "session", "value": "s3cret", "url": "http://127.0.0.1/"}])
    assert [c["name"] for c in first.context.cookies()] == ["session"]
    assert new_page().context.cookies() == []


def test_a_full_page_screenshot_is_written(page, tmp_path):
    page.set_content(GOOD)
    shot = screenshot(page, tmp_path / "shots" / "good.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_javascript_the_keyboard_still_works_and_axe_refuses_rather_than_hangs(new_page):
    page = new_page(java_script_enabled=False)
    page.set_content(GOOD)
    assert keyboard_reachable(page, "button[type=submit]")
    with pytest.raises(RuntimeError, match="axe-core needs JavaScript"):
        axe_violations(page)


def test_without_chromium_the_tests_skip_here_and_fail_on_ci(monkeypatch):
    monkeypatch.setattr(harness, "CHROMIUM", Path("/nonexistent/chromium"))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="make test"):
        harness.require_browser()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must run the browser tests"):
        harness.require_browser()
