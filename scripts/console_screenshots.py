"""Regenerate the screenshots of docs/console.md from a real gateway, in Debian's Chromium.

    .venv/bin/python scripts/console_screenshots.py [--out docs/console]

What it does, from nothing: a fresh data directory; ``verdict serve`` on the embedded
defaults (it trains, validates, registers and promotes the reference model, and prints
a development API key); 40 decisions through the API about 20 data subjects; the
scheduled immutability test (``verdict audit immutability-test``), so trail health has
evidence to show; then the browser signs in, starts a replay from the form, and takes a
full-page screenshot of every view. Nothing is drawn by hand; rerun it after a change
to a page and commit the PNGs with it.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

from tests.support.browser import DEFAULT_CONTEXT, launch, missing_browser, screenshot  # noqa: E402
from verdict.gateway.datasets import load_dataset  # noqa: E402

DECISIONS = 40
SUBJECTS = 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(home: Path, port: int, log: Path) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "VERDICT_HOME": str(home), "VERDICT_LOG_FORMAT": "text", "VERDICT_CHECKPOINT_INTERVAL_S": "1"}
    out = open(log, "w")  # noqa: SIM115 - owned by the child
    process = subprocess.Popen(
        [sys.executable, "-m", "verdict", "serve", "--port", str(port)], cwd=home, env=env, stdout=out, stderr=out
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"verdict serve exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    else:
        raise SystemExit(f"verdict serve did not get ready:\n{log.read_text()[-3000:]}")
    key = re.search(r"\b(vk_[A-Za-z0-9]+_[A-Za-z0-9_-]+)", log.read_text())
    if key is None:
        raise SystemExit("no development API key in the server's output")
    return process, key[1]


def _decide(url: str, key: str) -> list[str]:
    headers = {"Authorization": f"Bearer {key}"}
    manifest = httpx.get(url + "/v1/models/german-credit", headers=headers, timeout=30).json()
    inputs = {spec["name"] for spec in manifest["inputs"]}
    rows = load_dataset("german-credit").rows
    made = []
    for n in range(DECISIONS):
        request_id = f"loan-{7700 + n}"
        body = {
            "model": "german-credit",
            "request_id": request_id,
            "subject_id": f"customer-{n % SUBJECTS:03d}",
            "attributes": {k: v for k, v in rows[n].items() if k in inputs},
        }
        answer = httpx.post(url + "/v1/decisions", headers=headers, json=body, timeout=60)
        answer.raise_for_status()
        made.append(request_id)
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=PROJECT / "docs" / "console")
    args = parser.parse_args()
    if (why := missing_browser()) is not None:
        raise SystemExit(why)
    # lazy: a script run; Playwright is a test dependency
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="verdict-console-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        port = _free_port()
        process, key = _serve(home, port, Path(tmp) / "serve.log")
        url = f"http://127.0.0.1:{port}"
        try:
            decided = _decide(url, key)
            time.sleep(2)  # the gateway checkpoints within a second: the replay then proves every decision
            env = {**os.environ, "VERDICT_HOME": str(home)}
            subprocess.run(
                [sys.executable, "-m", "verdict", "audit", "immutability-test"], cwd=home, env=env, check=False
            )
            with sync_playwright() as playwright:
                browser = launch(playwright)
                page = browser.new_context(**DEFAULT_CONTEXT).new_page()
                shots = []

                def shoot(name: str) -> None:
                    shots.append(screenshot(page, args.out / f"{name}.png"))

                page.goto(url + "/console")
                shoot("sign-in")
                page.get_by_label("API key").fill(key)
                page.get_by_role("button", name="Sign in").click()
                page.get_by_role("textbox", name="Request id").fill(decided[1])
                shoot("decisions")
                page.goto(f"{url}/console/decisions/{decided[1]}")
                shoot("decision")
                page.goto(url + "/console/decisions")
                page.get_by_role("textbox", name="Subject id").fill("customer-001")
                page.get_by_role("button", name="Find decisions").click()
                shoot("subject")
                page.goto(url + "/console/replays")
                page.get_by_label("Every decision of a model version").check()
                page.get_by_label("Model (NAME or NAME:VERSION)").fill("german-credit")
                page.get_by_label("Purpose (recorded with the replay)").fill("Q4 model-risk review")
                shoot("replays")
                page.get_by_role("button", name="Start replay").click()
                page.wait_for_selector("#replay-verdict", timeout=600_000)
                shoot("replay-report")
                for name, path in (
                    ("trail-health", "/console/trail"),
                    ("models", "/console/models"),
                    ("monitoring", "/console/monitoring"),
                ):
                    page.goto(url + path)
                    shoot(name)
                page.goto(url + "/console/models")
                page.locator("table a").first.click()
                shoot("model")
                browser.close()
        finally:
            process.terminate()
            process.wait(timeout=60)
    for shot in shots:
        print(shot.relative_to(PROJECT))


if __name__ == "__main__":
    main()
