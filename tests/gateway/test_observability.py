"""Operating a real gateway: JSON logs, request ids, traces over OTLP, metrics, fail-closed events.

One real ``verdict serve`` process for the module, started as production
starts it (``--no-bootstrap``, no API key on file), exporting its spans over
OTLP/HTTP to a real receiver on loopback (tests/support/otlp_receiver.py).
Everything is read where an operator reads it: the process's log output,
the spans as a collector receives them, ``/metrics``.

The last test takes the chain over from the gateway (it stops for good):
keep it last.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import time
import uuid
from datetime import UTC, datetime

import httpx
import msgspec
import pytest

from tests.gateway.conftest import auth, run_verdict
from tests.support.gateway_server import GatewayServer, prepare_home
from tests.support.otlp_receiver import OtlpReceiver, ReceivedSpan
from verdict import __version__
from verdict.audit import layout
from verdict.audit.lease import Holder, LeaseDoc, newest_lease
from verdict.audit.records import format_time
from verdict.audit.stores import ObjectExists, open_store
from verdict.gateway.datasets import load_dataset

ROW = load_dataset("german-credit").rows[0]
SUBJECT = "subject-observed-4711"
SERVER_KIND = 2  # opentelemetry.proto.trace.v1.Span.SpanKind.SPAN_KIND_SERVER
UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
LEASE = {"VERDICT_LEASE_TTL_S": "4", "VERDICT_LEASE_RENEW_S": "1", "VERDICT_LEASE_SKEW_S": "0.5"}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, trained_dirs):
    """The gateway, its receiver, and what its start-up printed. The API keys are put on
    file only once it runs: it started as a production configuration with none."""
    home = tmp_path_factory.mktemp("observed-home")
    tokens = prepare_home(home, trained_dirs["german-credit"])
    keys, aside = home / "apikeys.json", home / "apikeys.aside.json"
    shutil.move(keys, aside)
    with OtlpReceiver() as receiver:
        env = {
            "VERDICT_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "50",  # export every 50 ms: the test waits for spans, not for 5 s
            "VERDICT_LOG_FORMAT": "json",
            "VERDICT_LOG_LEVEL": "info",
            **LEASE,  # renewed every second: the last test's takeover is noticed at once
        }
        server = GatewayServer(home, env=env).start()
        try:
            server.startup_log = server.log_path.read_text()
            server.made_a_key = keys.exists()
            shutil.move(aside, keys)  # the gateway reads new keys without a restart
            server.tokens = tokens
            server.receiver = receiver
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="module")
def client(gateway):
    with httpx.Client(base_url=gateway.url, timeout=60) as c:
        yield c


def _lines(gateway) -> list[dict]:
    return [json.loads(line) for line in gateway.log_path.read_text().splitlines() if line.strip()]


def _wait_for_line(gateway, predicate) -> dict:
    """The access line is written once the last byte is sent, so the client may read the
    answer first: wait for the line (an event). The wait ends when the line is written or
    the server has exited (no deadline: a line never written is caught by pytest-timeout)."""
    while True:
        found = [line for line in _lines(gateway) if predicate(line)]
        if found:
            return found[-1]
        assert gateway.process.poll() is None, f"the server exited without that log line:\n{gateway.log()}"
        time.sleep(0.05)


def _access(gateway, request_id: str) -> dict:
    return _wait_for_line(
        gateway, lambda line: line["logger"] == "verdict.access" and line.get("request_id") == request_id
    )


def _decide(client, gateway, request_id: str | None = None, headers: dict | None = None) -> httpx.Response:
    body = {"model": "german-credit", "subject_id": SUBJECT, "attributes": ROW}
    if request_id is not None:
        body["request_id"] = request_id
    return client.post("/v1/decisions", json=body, headers={**auth(gateway.tokens["client"]), **(headers or {})})


def test_a_production_configuration_makes_no_key_and_says_how(gateway):
    log = gateway.startup_log
    assert not gateway.made_a_key
    assert "Generated a development API key" not in log and "vk_" not in log, log
    assert "verdict apikeys create --scope score" in log, log
    assert "Try:" not in log and "checking_account" not in log  # no sample request (a training row) in a production log


def test_every_line_is_json_and_access_lines_never_carry_personal_data(gateway, client):
    decided = _decide(client, gateway, f"obs-{uuid.uuid4().hex[:8]}", {"X-Request-ID": "access-line-1"})
    assert decided.status_code == 200, decided.text
    answer = decided.json()
    staff = auth(gateway.tokens["staff"])
    lookup = client.get(f"/v1/subjects/{SUBJECT}/decisions", headers={**staff, "X-Request-ID": "access-line-2"})
    assert lookup.status_code == 200, lookup.text
    refused = client.post(
        "/v1/decisions",
        json={"model": "german-credit", "attributes": {**ROW, "purpose": "Z-not-a-purpose"}},
        headers={**auth(gateway.tokens["client"]), "X-Request-ID": "access-line-3"},
    )
    assert refused.status_code == 422, refused.text

    line = _access(gateway, "access-line-1")
    assert line["level"] == "INFO" and line["message"] == "POST /v1/decisions 200"
    assert {k: line[k] for k in ("method", "route", "status", "protocol")} == {
        "method": "POST",
        "route": "/v1/decisions",
        "status": 200,
        "protocol": "http",
    }
    assert isinstance(line["latency_ms"], float) and line["latency_ms"] > 0
    assert (line["model"], line["version"], line["decision"]) == (
        answer["model"]["name"],
        answer["model"]["version"],
        answer["decision"],
    )
    assert line["decision_request_id"] == answer["request_id"]  # the audit key
    assert line["key_id"] == gateway.tokens["client"].split("_")[1]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", line["ts"]), line["ts"]
    assert _access(gateway, "access-line-2")["route"] == "/v1/subjects/{subject_id}/decisions"
    invalid = _access(gateway, "access-line-3")
    assert (invalid["status"], invalid["problem"]) == (422, refused.json()["type"].rsplit("/", 1)[-1])

    lines = _lines(gateway)  # every line of the process parses: nothing but JSON objects
    text = gateway.log_path.read_text()
    assert all({"ts", "level", "logger", "message"} <= line.keys() for line in lines)
    assert any(line["logger"].startswith("uvicorn") for line in lines)  # uvicorn's own lines too
    for secret in (SUBJECT, "Z-not-a-purpose", gateway.tokens["client"], gateway.tokens["staff"]):
        assert secret not in text
    for token in gateway.tokens.values():
        assert token.split("_", 2)[2] not in text  # not even the secret part of any key
    for name, value in ROW.items():
        assert f'"{name}"' not in text
        if isinstance(value, str):
            assert f'"{value}"' not in text, name


def test_request_ids_are_echoed_or_made_on_every_response(gateway, client):
    ok = client.get("/healthz", headers={"X-Request-ID": "probe-1"})
    assert ok.headers["x-request-id"] == "probe-1"
    made = client.get("/healthz")
    assert UUID4.fullmatch(made.headers["x-request-id"]), made.headers
    too_long = client.get("/healthz", headers={"X-Request-ID": "x" * 129})
    assert UUID4.fullmatch(too_long.headers["x-request-id"])
    replaced = client.get("/healthz", headers={"X-Request-ID": b"caller-\xe9t\xe9"})  # not ASCII: replaced
    assert UUID4.fullmatch(replaced.headers["x-request-id"])

    unauthenticated = client.post("/v1/decisions", json={}, headers={"X-Request-ID": "no-key-1"})
    assert unauthenticated.status_code == 401 and unauthenticated.headers["x-request-id"] == "no-key-1"
    invalid = client.post(
        "/v1/decisions",
        json={"model": "german-credit", "attributes": {"duration_months": "six"}},
        headers={**auth(gateway.tokens["client"]), "X-Request-ID": "invalid-1"},
    )
    assert invalid.status_code == 422 and invalid.headers["x-request-id"] == "invalid-1", invalid.text
    nowhere = client.get("/no/such/route", headers={"X-Request-ID": "nowhere-1"})
    assert nowhere.status_code == 404 and nowhere.headers["x-request-id"] == "nowhere-1"

    refused = _access(gateway, "no-key-1")
    assert (refused["status"], refused["route"]) == (401, "/v1/decisions") and "key_id" not in refused
    assert _access(gateway, "invalid-1")["status"] == 422
    assert _access(gateway, "nowhere-1")["route"] == "unmatched"


def _one(spans: list[ReceivedSpan], name: str, **where: str) -> ReceivedSpan:
    found = [s for s in spans if s.name == name and all(getattr(s, k) == v for k, v in where.items())]
    assert len(found) == 1, (name, where, spans)
    return found[0]


def test_a_callers_trace_continues_through_validation_the_batch_and_the_audit_commit(gateway, client):
    trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    decided = _decide(client, gateway, headers={"traceparent": f"00-{trace_id}-{caller_span}-01"})
    assert decided.status_code == 200, decided.text

    def complete(spans: list[ReceivedSpan]) -> bool:
        ours = [s for s in spans if s.trace_id == trace_id]
        server = [s for s in ours if s.kind == SERVER_KIND]
        if not server or not {"verdict.validate", "verdict.respond"} <= {s.name for s in ours}:
            return False
        linked = [s for s in spans if (trace_id, server[0].span_id) in s.links]
        batch_traces = {s.trace_id for s in linked}
        names = {s.name for s in spans if s.trace_id in batch_traces}
        return {"verdict.score", "verdict.explain", "verdict.audit.seal", "verdict.audit.append"} <= names

    spans = gateway.receiver.wait_for(complete)
    server = _one(spans, "POST /v1/decisions", trace_id=trace_id)
    assert server.kind == SERVER_KIND and server.parent_span_id == caller_span  # a child of the caller's span
    assert server.attributes["http.route"] == "/v1/decisions"
    assert server.attributes["http.response.status_code"] == 200
    assert server.resource["service.name"] == "verdict-gateway"
    assert server.resource["service.instance.id"] == "gateway-0"
    assert server.resource["service.version"] == __version__
    for name in ("verdict.validate", "verdict.respond"):
        assert _one(spans, name, trace_id=trace_id).parent_span_id == server.span_id

    compute = _one(spans, "verdict.batch.compute", links=[(trace_id, server.span_id)])
    assert compute.trace_id != trace_id and compute.parent_span_id == ""  # the batch's own trace
    for name in ("verdict.score", "verdict.explain"):
        stage = _one(spans, name, trace_id=compute.trace_id)
        assert stage.parent_span_id == compute.span_id
        assert stage.attributes["verdict.model"] == "german-credit"
    commit = _one(spans, "verdict.audit.commit", trace_id=compute.trace_id)
    assert commit.parent_span_id == compute.span_id and (trace_id, server.span_id) in commit.links
    for name in ("verdict.audit.seal", "verdict.audit.append"):
        assert _one(spans, name, trace_id=compute.trace_id).parent_span_id == commit.span_id


def test_spans_never_carry_inputs_even_when_validation_refuses_them(gateway, client):
    trace_id = secrets.token_hex(16)
    refused = client.post(
        "/v1/decisions",
        json={"model": "german-credit", "subject_id": SUBJECT, "attributes": {**ROW, "purpose": "Z-secret-purpose"}},
        headers={**auth(gateway.tokens["client"]), "traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"},
    )
    assert refused.status_code == 422 and "Z-secret-purpose" in refused.text  # the caller is told, the traces not
    spans = gateway.receiver.wait_for(
        lambda spans: {"verdict.validate", "POST /v1/decisions"} <= {s.name for s in spans if s.trace_id == trace_id}
    )
    validate = _one(spans, "verdict.validate", trace_id=trace_id)
    assert (
        validate.status == (2, "InputValidationError") and validate.attributes["error.type"] == "InputValidationError"
    )
    everything = repr([(s.attributes, s.events, s.status) for s in spans])
    for secret in ("Z-secret-purpose", SUBJECT, ROW["checking_account"], *gateway.tokens.values()):
        assert secret not in everything


def test_metrics_cover_the_process_the_models_and_the_queue_with_clean_routes(gateway, client):
    decided = _decide(client, gateway)
    assert decided.status_code == 200, decided.text
    version = decided.json()["model"]["version"]
    staff = auth(gateway.tokens["staff"])
    assert client.get(f"/v1/decisions/{decided.json()['request_id']}", headers=staff).status_code == 200
    assert client.get("/nothing/here").status_code == 404
    metrics = client.get("/metrics").text

    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "python_gc_objects_collected_total"):
        assert re.search(rf"^{name}(\{{.*\}})? \d", metrics, re.M), name
    assert re.search(r"^python_info\{.*\} 1\.0$", metrics, re.M)
    build = re.search(r"^verdict_build_info\{(.*)\} 1\.0$", metrics, re.M)
    assert build and f'version="{__version__}"' in build[1] and 'device="cpu"' in build[1], build
    assert 'python="3.11' in build[1] and 'torch="' in build[1]
    model = f'model="german-credit",version="{version}"'
    for histogram in ("verdict_score_seconds", "verdict_explain_seconds"):
        count = re.search(rf"^{histogram}_count\{{{model}\}} (\S+)$", metrics, re.M)
        assert count and float(count[1]) >= 1, histogram
    info = re.search(
        rf'^verdict_model_info\{{model="german-credit",sha256="([0-9a-f]{{64}})",version="{version}"\}} 1\.0$',
        metrics,
        re.M,
    )
    assert info and info[1] == decided.json()["model"]["sha256"], metrics
    assert re.search(r"^verdict_queue_depth 0\.0$", metrics, re.M)
    assert re.search(r"^verdict_in_flight 0\.0$", metrics, re.M)
    assert 'route="/v1/decisions/{request_id}"' in metrics
    assert 'route="unmatched"' in metrics
    assert ":str}" not in metrics and "/nothing/here" not in metrics
    for kept in ("verdict_http_requests_total", "verdict_http_request_seconds_bucket", "verdict_batch_size_bucket"):
        assert kept in metrics


def test_serve_help_shows_the_config_table_and_the_version_prints():
    helped = run_verdict("serve", "--help", env={"COLUMNS": "200", "TERM": "dumb"})
    assert helped.returncode == 0, helped.stderr
    assert "TOML file with a [gateway] table" in helped.stdout, helped.stdout
    version = run_verdict("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"verdict {__version__}", version


def _take_the_chain_over(store_url: str, chain_id: str = "gateway-0") -> None:
    """What a second writer does once it believes the lease free: write the chain's next
    lease (write-once: if the gateway's own renewal got there first, take the one after)."""
    store = open_store(store_url)
    holder = Holder("observability-test", 0, secrets.token_hex(16), "a second writer (tests)")
    for _ in range(50):
        newest = newest_lease(store, chain_id)
        assert newest is not None
        n = newest[0] + 1
        now = datetime.now(UTC)
        doc = LeaseDoc(chain_id, n, holder, format_time(now), format_time(now.replace(year=now.year + 1)))
        try:
            store.put_once(layout.lease_key(chain_id, n), msgspec.json.encode(doc))
            return
        except ObjectExists:
            continue
    raise AssertionError("could not write the next lease")


def test_a_chain_taken_over_logs_one_error_event_for_many_refused_decisions(gateway, client):
    """Keep last: the gateway's chain writer stops for good here."""
    _take_the_chain_over((gateway.home / "store").as_uri())
    refused = []
    for attempt in range(600):  # the gateway's renewal (every second) finds the new lease
        response = _decide(client, gateway, headers={"X-Request-ID": f"after-takeover-{attempt}"})
        if response.status_code == 503:
            refused.append(response)
            break
        assert response.status_code == 200, response.text
    assert refused, "the gateway never noticed the takeover"
    for n in range(12):
        response = _decide(client, gateway, headers={"X-Request-ID": f"refused-{n}"})
        assert response.status_code == 503, response.text
        refused.append(response)
    for n in range(3):
        ready = client.get("/readyz", headers={"X-Request-ID": f"readyz-{n}"})
        assert ready.status_code == 503 and "chain writer stopped" in ready.json()["checks"]["signer"]
    _access(gateway, "readyz-2")

    lines = _lines(gateway)
    stopped = [line for line in lines if line.get("event") == "chain_writer_stopped"]
    assert len(stopped) == 1, stopped
    assert stopped[0]["level"] == "ERROR" and stopped[0]["chain"] == "gateway-0"
    assert "another writer owns chain 'gateway-0'" in stopped[0]["error"], stopped[0]
    unready = [line for line in lines if line.get("event") == "replica_unready"]
    assert len(unready) == 1 and unready[0]["level"] == "ERROR", unready
    assert unready[0]["request_id"] == "readyz-0"  # written while handling the probe that saw it
    assert "chain writer stopped" in unready[0]["checks"]["signer"]
    assert _access(gateway, "refused-11")["status"] == 503
    errors = [line for line in lines if line["level"] == "ERROR" and line["logger"].startswith("verdict")]
    assert len(errors) <= 2, errors  # the event and the replica's unreadiness: nothing per refused request
