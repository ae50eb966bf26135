"""The console over real HTTP: sessions, CSRF, scopes, and page views recorded in the trail.

One real ``verdict serve`` for the module, decisions made through its API; a second
one on a copy of its data directory whose store was altered around our code (the way
an intruder with write access to the store would); a third on another copy with a
one-second idle timeout, where nothing is asserted before the wait, so a slow machine
cannot end a session a step early (the timeouts themselves are tested on a hand-wound
clock in test_console_sessions.py). The same servers are driven in a real browser below.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import httpx
import msgspec
import pytest
from markupsafe import escape

from tests.gateway.test_http_decisions import chain_records
from tests.support.browser import assert_accessible, keyboard_reachable
from tests.support.gateway_server import GatewayServer, prepare_home
from verdict.audit.records import AccessBody
from verdict.audit.stores import open_store
from verdict.gateway.console.decision_page import decision_page
from verdict.gateway.console.render import render_page, trusted_svg
from verdict.gateway.datasets import load_dataset
from verdict.gateway.fidelity import Fidelity
from verdict.gateway.lookups import ExplanationView
from verdict.gateway.registry import Registry
from verdict.replay.report import verify_signed_report

SUBJECTS = ("anna-1", "ben-2", "cleo-3")


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def decide(server: GatewayServer, request_id: str, subject_id: str, row: dict) -> dict:
    answer = httpx.post(
        server.url + "/v1/decisions",
        headers=auth(server.tokens["client"]),
        json={"model": "german-credit", "request_id": request_id, "subject_id": subject_id, "attributes": row},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


@pytest.fixture(scope="module")
def console(tmp_path_factory, trained_dirs):
    home = tmp_path_factory.mktemp("console-home")
    tokens = prepare_home(home, trained_dirs["german-credit"])
    server = GatewayServer(home, env={"VERDICT_CHECKPOINT_INTERVAL_S": "0.5"}).start()
    server.tokens = tokens
    rows = load_dataset("german-credit").rows
    server.decisions = {f"loan-{n}": decide(server, f"loan-{n}", s, rows[n]) for n, s in enumerate(SUBJECTS)}
    yield server
    server.stop()


def tamper_score(store_root: Path, request_id: str) -> None:
    """Change one digit of a logged score in the segment file that holds it (around our code)."""
    for segment in sorted((store_root / "chains" / "gateway-0" / "segments").iterdir()):
        data = segment.read_bytes()
        if f'"request_id":"{request_id}"'.encode() in data:
            forged = re.sub(
                rb'"score":0\.(\d)', lambda m: b'"score":0.' + bytes([48 + (int(m[1]) + 1) % 10]), data, count=1
            )
            assert forged != data
            segment.chmod(0o644)
            segment.write_bytes(forged)
            return
    raise AssertionError(f"no segment holds {request_id}")


def copy_of(console: GatewayServer, tmp_path_factory, name: str) -> Path:
    home = tmp_path_factory.mktemp(name) / "home"
    shutil.copytree(console.home, home, ignore=shutil.ignore_patterns("*.log", "leases"))
    return home


@pytest.fixture(scope="module")
def tampered(console, tmp_path_factory):
    """A copy of the console's data directory, one logged score altered."""
    home = copy_of(console, tmp_path_factory, "console-tampered")
    tamper_score(home / "store", "loan-1")
    server = GatewayServer(home, env={"VERDICT_CHAIN_ID": "gateway-9"}).start()
    server.tokens = console.tokens
    yield server
    server.stop()


@pytest.fixture(scope="module")
def impatient(console, tmp_path_factory):
    """A copy of the console's data directory served with a one-second idle timeout."""
    home = copy_of(console, tmp_path_factory, "console-impatient")
    server = GatewayServer(home, env={"VERDICT_CHAIN_ID": "gateway-8", "VERDICT_CONSOLE_IDLE_S": "1"}).start()
    server.tokens = console.tokens
    yield server
    server.stop()


IDLE_WAIT_S = 1.5
"""Longer than the impatient server's idle timeout; sleeping only ever makes it longer."""


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, html[:500]
    return match[1]


def sign_in(server: GatewayServer, token: str) -> httpx.Client:
    client = httpx.Client(base_url=server.url, timeout=60)
    form = client.get("/console/sign-in")
    assert form.status_code == 200
    answer = client.post("/console/sign-in", data={"api_key": token, "csrf": csrf_of(form.text)})
    assert answer.status_code == 303, answer.text
    return client


def accesses(server: GatewayServer) -> list[tuple[str, str, str]]:
    store = open_store((server.home / "store").as_uri())
    return [
        (r.body.action, r.body.actor_key_id, r.body.target_request_id)
        for r in chain_records(store, "gateway-0")
        if isinstance(r.body, AccessBody)
    ]


def key_id(token: str) -> str:
    return token.split("_")[1]


def test_sign_in_gives_a_strict_http_only_session_cookie_scoped_to_the_console(console):
    client = httpx.Client(base_url=console.url)
    form = client.get("/console/sign-in")
    answer = client.post(
        "/console/sign-in",
        data={"api_key": console.tokens["staff"], "csrf": csrf_of(form.text), "next": "/console/decisions/loan-0"},
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/decisions/loan-0"
    cookie = next(c for c in answer.headers.get_list("set-cookie") if c.startswith("verdict_console="))
    attributes = {a.strip().split("=")[0].lower() for a in cookie.split(";")[1:]}
    assert {"httponly", "path", "samesite"} <= attributes
    assert "samesite=strict" in cookie.lower() and "path=/console" in cookie.lower()
    assert "secure" not in attributes  # plain http on loopback; Secure whenever the page came over TLS
    page = client.get("/console/decisions/loan-0")
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


def test_a_wrong_key_or_a_forged_sign_in_form_gets_no_session(console):
    client = httpx.Client(base_url=console.url)
    form = client.get("/console/sign-in")
    wrong = client.post("/console/sign-in", data={"api_key": "vk_nope_nope", "csrf": csrf_of(form.text)})
    assert wrong.status_code == 401 and "not valid" in wrong.text
    assert "verdict_console=" not in " ".join(wrong.headers.get_list("set-cookie")).replace("verdict_console_", "")
    # posted from another site: the attacker's page has neither the sign-in cookie nor its token
    forged = httpx.post(console.url + "/console/sign-in", data={"api_key": console.tokens["staff"], "csrf": "x"})
    assert forged.status_code == 403
    assert not any(c.startswith("verdict_console=") for c in forged.headers.get_list("set-cookie"))


def test_a_decision_page_is_recorded_in_the_trail_like_an_api_lookup(console):
    before = accesses(console)
    client = sign_in(console, console.tokens["staff"])
    page = client.get("/console/decisions/loan-2")
    assert page.status_code == 200
    logged = console.decisions["loan-2"]
    assert logged["decision"].capitalize() in page.text and "cleo-3" in page.text
    new = [a for a in accesses(console) if a not in before]
    assert new == [("lookup", key_id(console.tokens["staff"]), "loan-2")]


def explanation_of(server: GatewayServer, request_id: str) -> ExplanationView:
    """The decision's explanation as the API lookup answers it (itself a recorded lookup)."""
    answer = httpx.get(
        f"{server.url}/v1/decisions/{request_id}/explanation", headers=auth(server.tokens["staff"]), timeout=60
    )
    assert answer.status_code == 200, answer.text
    return msgspec.json.decode(answer.content, type=ExplanationView)


def test_a_decision_page_says_whether_its_reasons_are_certified_and_what_they_cost(console):
    fidelity = explanation_of(console, "loan-0").fidelity
    assert fidelity is not None  # every decision explained since fidelity is recorded
    page = sign_in(console, console.tokens["staff"]).get("/console/decisions/loan-0").text
    reasons = page.split('id="reasons-heading"', 1)[1].split("</section>", 1)[0]
    heading = "Reasons certified" if fidelity.certified else "Reasons not certified"
    state = "ok" if fidelity.certified else "pending"
    assert f'<strong class="tag {state}">{heading}</strong>' in reasons  # in words, not colour alone
    assert f"{fidelity.evaluations:,} model evaluations spent on this explanation" in reasons
    assert reasons.index(heading) < reasons.index("<ol>")  # read before the reasons it qualifies
    assert ("± bound" in page) == bool(fidelity.error_bounds)  # the column only where bounds were estimated


def rendered(view: ExplanationView, attributes: dict, manifest) -> str:
    """The decision page the console would send for ``view`` (its main part; no session)."""
    page = decision_page(view, attributes, manifest)
    return render_page("decision.html", session=None, nav=[], current="", page=page, chart=trusted_svg(page.chart_svg))


def test_a_decision_page_shows_each_contributions_bound_when_they_were_estimated(console):
    """The logged decision's page as the console renders it, its fidelity replaced by a
    certified explainer's (the reference model's algorithm may estimate no bounds)."""
    view = explanation_of(console, "loan-1")
    registry = Registry(open_store((console.home / "store").as_uri()))
    manifest = registry.manifest(view.model["name"], view.model["version"])
    attributes = load_dataset("german-credit").rows[1]
    bounds = {name: 0.00125 * (i + 1) for i, name in enumerate(view.contributions)}
    certified = msgspec.structs.replace(view, fidelity=Fidelity(True, 14_593, 8, bounds, 3.0))
    html = rendered(certified, attributes, manifest)
    assert '<strong class="tag ok">Reasons certified</strong>' in html and "at 3 standard errors" in html
    assert "14,593 model evaluations" in html
    table = html.split("<summary>Every attribute", 1)[1].split("</table>", 1)[0]
    assert '<th scope="col" class="num">± bound</th>' in table
    labels = {spec.name: spec.label for spec in manifest.inputs}
    for name, bound in bounds.items():
        row = rf'<td>{re.escape(str(escape(labels.get(name, name))))}</td><td class="num">[+-][0-9.]+</td><td class="num">±{bound:.5f}</td>'
        assert re.search(row, table), name
    assert "± bound: 3 standard errors of each sampled contribution" in html

    older = rendered(msgspec.structs.replace(view, fidelity=None), attributes, manifest)
    assert "certified" not in older.split('id="reasons-heading"', 1)[1].split("</section>", 1)[0]
    assert "± bound" not in older  # a record from before fidelity was recorded: nothing claimed


def test_a_key_without_the_explain_scope_sees_no_decision_and_leaves_no_record(console):
    before = accesses(console)
    client = sign_in(console, console.tokens["examiner"])
    page = client.get("/console/decisions/loan-0")
    assert page.status_code == 403
    assert "explain" in page.text and "loan-0" not in page.text.replace("/console/decisions/loan-0", "")
    subject = client.post("/console/subjects", data={"subject_id": "anna-1", "csrf": csrf_of(page.text)})
    assert subject.status_code == 403 and "anna-1" not in subject.text
    assert accesses(console) == before


def test_forms_without_the_session_token_or_from_another_origin_change_nothing(console):
    client = sign_in(console, console.tokens["staff"])
    token = csrf_of(client.get("/console/decisions").text)
    before = accesses(console)
    missing = client.post("/console/subjects", data={"subject_id": "anna-1"})
    wrong = client.post("/console/subjects", data={"subject_id": "anna-1", "csrf": token[::-1]})
    foreign = client.post(
        "/console/subjects", data={"subject_id": "anna-1", "csrf": token}, headers={"Origin": "https://evil.example"}
    )
    assert [r.status_code for r in (missing, wrong, foreign)] == [403, 403, 403]
    assert all("anna-1" not in r.text for r in (missing, wrong, foreign))
    assert accesses(console) == before
    refused = client.post("/console/sign-out", data={})
    assert refused.status_code == 403
    assert client.get("/console/decisions").status_code == 200  # still signed in
    found = client.post("/console/subjects", data={"subject_id": "anna-1", "csrf": token})
    assert found.status_code == 200 and "loan-0" in found.text
    assert [a for a in accesses(console) if a not in before] == [
        ("subject_access", key_id(console.tokens["staff"]), "loan-0")
    ]


def test_sign_out_ends_the_session_on_the_server(console):
    client = sign_in(console, console.tokens["staff"])
    cookie = client.cookies["verdict_console"]
    token = csrf_of(client.get("/console/decisions").text)
    out = client.post("/console/sign-out", data={"csrf": token})
    assert out.status_code == 303 and out.headers["location"].startswith("/console/sign-in")
    replayed = httpx.get(console.url + "/console/decisions/loan-0", cookies={"verdict_console": cookie})
    assert replayed.status_code == 303 and replayed.headers["location"].startswith("/console/sign-in")


def test_sign_in_never_sends_the_browser_off_the_console(console):
    for target in ("https://evil.example/x", "//evil.example/x", "/v1/decisions", "/console//evil"):
        client = httpx.Client(base_url=console.url)
        form = client.get("/console/sign-in")
        answer = client.post(
            "/console/sign-in", data={"api_key": console.tokens["staff"], "csrf": csrf_of(form.text), "next": target}
        )
        assert answer.headers["location"] == "/console/decisions", target


def test_a_replay_started_from_the_form_reports_and_its_signed_json_verifies(console):
    client = sign_in(console, console.tokens["examiner"])
    token = csrf_of(client.get("/console/replays").text)
    bad = client.post("/console/replays", data={"csrf": token, "mode": "request_id", "request_id": ""})
    assert bad.status_code == 400 and "request id" in bad.text
    started = client.post(
        "/console/replays", data={"csrf": token, "mode": "request_id", "request_id": "loan-0", "purpose": "exam"}
    )
    assert started.status_code == 303
    page = client.get(started.headers["location"])
    while "PASSED" not in page.text:  # the page refreshes itself while the replay runs
        assert page.status_code == 200 and 'http-equiv="refresh"' in page.text
        time.sleep(0.5)
        page = client.get(started.headers["location"])
    assert "NOT PASSED" not in page.text and "Bit-identical" in page.text
    download = client.get(started.headers["location"] + "/report.json")
    assert download.status_code == 200 and "attachment" in download.headers["content-disposition"]
    assert verify_signed_report(open_store((console.home / "store").as_uri()), download.content).ok
    listed = client.get("/console/replays")
    assert started.headers["location"].rsplit("/", 1)[1] in listed.text


def test_a_tampered_record_shows_red(console, tampered):
    client = sign_in(tampered, tampered.tokens["staff"])
    red = client.get("/console/decisions/loan-1")
    assert red.status_code == 200 and "Verification FAILED" in red.text and 'class="state failed"' in red.text
    assert console.decisions["loan-1"]["decision"].capitalize() not in red.text.split("<main", 1)[1].split("FAILED")[0]
    # the same decision on the original store verifies; on the copy, its neighbours' inclusion
    # proofs fail too (the checkpoint's root no longer matches the altered chain)
    original = sign_in(console, console.tokens["staff"]).get("/console/decisions/loan-1")
    assert "Verification FAILED" not in original.text and 'class="state failed"' not in original.text
    assert "checkpoint_root_mismatch" in client.get("/console/decisions/loan-0").text


def test_an_idle_session_ends_on_the_servers_clock(impatient):
    client = sign_in(impatient, impatient.tokens["staff"])
    assert client.cookies.get("verdict_console")  # signed in: a session to lose
    time.sleep(IDLE_WAIT_S)
    expired = client.get("/console/decisions/loan-0")
    assert expired.status_code == 303 and expired.headers["location"].startswith("/console/sign-in")


# --- in a real browser (Debian's Chromium; tests/support/browser.py) -----------------------------------------------


def browser_sign_in(page, server: GatewayServer, token: str, then: str = "/console") -> None:
    page.goto(server.url + then)
    assert "/console/sign-in" in page.url  # not signed in: sent to sign in, and back afterwards
    page.get_by_label("API key").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()


def test_in_a_browser_staff_sign_in_look_up_a_decision_and_sign_out(console, new_page):
    page = new_page(java_script_enabled=False)  # forms post: the console works without JavaScript
    page.goto(console.url + "/console/decisions/loan-0")
    assert keyboard_reachable(page, "button[type=submit]")
    page.get_by_label("API key").fill(console.tokens["staff"])
    page.get_by_role("button", name="Sign in").click()
    assert page.url.endswith("/console/decisions/loan-0")
    logged = console.decisions["loan-0"]
    panel = page.locator("#check-heading")
    assert panel.inner_text() in ("Verified", "Signature verified, checkpoint pending")
    assert page.locator(".outcome").inner_text().startswith(logged["decision"].capitalize())
    assert page.locator("svg.contributions[role=img] title").first.text_content()
    assert str(logged["receipt"]["seq"]) in page.locator("section.state").inner_text()
    page.goto(console.url + "/console/decisions")
    page.get_by_role("textbox", name="Request id").fill("loan-2")
    page.get_by_role("button", name="Look up").click()
    assert page.url.endswith("/console/decisions/loan-2")
    page.goto(console.url + "/console/decisions")
    page.get_by_role("textbox", name="Subject id").fill("ben-2")
    page.get_by_role("button", name="Find decisions").click()
    assert "ben-2" not in page.url and page.get_by_role("link", name="loan-1").is_visible()
    page.get_by_role("button", name="Sign out").click()
    assert "signed_out" in page.url and "You are signed out" in page.content()
    page.goto(console.url + "/console/decisions/loan-0")
    assert "/console/sign-in" in page.url  # the old session is gone on the server


def test_in_a_browser_every_view_opens_is_labelled_and_passes_axe(console, new_page):
    page = new_page()
    page.goto(console.url + "/console/sign-in")
    assert_accessible(page)
    browser_sign_in(page, console, console.tokens["admin"])
    version = console.decisions["loan-0"]["model"]["version"]
    for path, heading in (
        ("/console/decisions", "Look up a decision"),
        ("/console/decisions/loan-0", "Decision loan-0"),
        ("/console/replays", "Replays"),
        ("/console/trail", "Trail health"),
        ("/console/models", "Models"),
        (f"/console/models/german-credit/{version}", f"german-credit {version}"),
        ("/console/monitoring", "Monitoring"),
    ):
        answer = page.goto(console.url + path)
        assert answer is not None and answer.status == 200, path
        assert heading in page.locator("h1").inner_text(), path
        assert page.locator("nav a[aria-current=page]").count() == 1, path
        assert_accessible(page)
    page.goto(console.url + "/console/decisions")
    page.get_by_role("textbox", name="Subject id").fill("cleo-3")
    page.get_by_role("button", name="Find decisions").click()
    assert page.get_by_role("link", name="loan-2").is_visible()
    assert_accessible(page)


def test_in_a_browser_an_examiner_replays_a_decision_and_downloads_the_signed_report(console, new_page):
    page = new_page()
    browser_sign_in(page, console, console.tokens["examiner"], then="/console/replays")
    page.get_by_label("One decision").check()
    page.get_by_role("textbox", name="Request id").fill("loan-2")
    page.get_by_label("Purpose (recorded with the replay)").fill("browser exam")
    page.get_by_role("button", name="Start replay").click()
    page.wait_for_selector("#replay-verdict", timeout=120_000)  # the page refreshes itself until then
    assert page.locator("#replay-verdict h2").inner_text() == "PASSED"
    assert page.locator("svg.tolerance-bands").count() == 1
    assert_accessible(page)
    with page.expect_download() as download:
        page.get_by_role("link", name="Download the signed report (JSON)").click()
    signed = Path(download.value.path()).read_bytes()
    assert verify_signed_report(open_store((console.home / "store").as_uri()), signed).ok
    page.goto(console.url + "/console/decisions/loan-2")
    assert "Not allowed" in page.locator("h1").inner_text()  # replay scope, not explain


def test_in_a_browser_a_tampered_store_turns_red_a_forged_form_is_refused_and_idle_sessions_end(
    tampered, impatient, new_page
):
    page = new_page()
    browser_sign_in(page, tampered, tampered.tokens["staff"], then="/console/decisions/loan-1")
    assert page.locator("section.state.failed #check-heading").inner_text() == "Verification FAILED"
    assert_accessible(page)
    page.goto(tampered.url + "/console/decisions")
    page.evaluate("document.querySelectorAll('input[name=csrf]').forEach((i) => { i.value = 'forged'; })")
    page.get_by_role("textbox", name="Subject id").fill("anna-1")
    page.get_by_role("button", name="Find decisions").click()
    assert "Form refused" in page.locator("h1").inner_text()
    page = new_page()
    browser_sign_in(page, impatient, impatient.tokens["staff"], then="/console/models")
    assert "verdict_console" in {c["name"] for c in page.context.cookies()}  # signed in: a session to lose
    time.sleep(IDLE_WAIT_S)
    page.goto(impatient.url + "/console/decisions")
    assert "/console/sign-in" in page.url
