"""Console page server time on a large trail: each page under 200 ms on 100,000 decisions.

Two trails, measured side by side in one run: the large one (``--decisions``, default
100,000) and a baseline of 1,000, so each page's figure comes with how it grows
(100k/1k). Both are made through the real decision path, in process:
``build_services(load_settings(store=..., bootstrap=False))`` then
``DecisionService.prepare`` + ``decide_batch`` in micro-batches of 64 (the gateway's
``max_batch``): validated, scored, explained, sealed, signed and appended by the
gateway's own code, checkpoints every 1,000 records (the default). The rows are the
German credit data set, cycled; every decision has a ``subject_id`` (5 decisions per
subject: 20,000 subjects at 100,000) and its ``decided_at`` spread evenly over the
last 90 days (the service's clock, a constructor parameter, is set to walk them).
Each trail is built in a child process (the services keep process-wide state) and
cached under ``benchmarks/.cache/console-<n>/`` (data directory, model, API tokens);
a rerun reuses it, ``--rebuild`` makes a new one. Page views append their access
records to the cached trail (a few hundred per run: noise against 100,000).

Measured: one ``verdict serve --no-bootstrap`` per trail, JSON logs. Server time is
the access line's ``latency_ms`` (from the ASGI middleware's first byte in to the last
byte out), matched to each request by the response's ``x-request-id``; client time is
the round trip seen here over loopback. The servers are started one after the other;
right after each is ready, each of its pages is viewed once, in page order: the
"first view", printed as measured, never hidden in a warm-up (cold caches: a chain's
verified leaves are kept in memory, so the first decision page reads the whole chain;
the monitoring fold the server starts at start-up runs meanwhile and competes for the
CPU). By default the monitoring state an earlier run kept in the data directory is
removed first, so the fold starts from scratch as on a first start;
``--keep-monitor-state`` measures a restart instead. The replay page's first view
comes after a one-decision replay started through the console's form has finished.
Then the server is left to finish what it started (until it uses no CPU; the time is
printed), and ``--requests`` (default 30) views per page follow, alternating between
the two servers so they see the same machine noise; decision and subject pages pick a
random request id or subject each time. Pages that do not answer 200 are printed as
"not available". Target: p95 server time under 200 ms at 100,000 decisions ("met";
"median only" when only the median is under it).

Run: .venv/bin/python benchmarks/console_pages.py [--decisions 100000] [--requests 30] [--quick]
[--rebuild] [--keep-monitor-state]   (``--quick``: 10,000 / 1,000.)
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from tests.support.gateway_server import GatewayServer  # noqa: E402

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
MODEL = "german-credit"
BASELINE = 1_000
TARGET_DECISIONS = 100_000
QUICK = 10_000
PER_SUBJECT = 5
DAYS = 90
BATCH = 64
TARGET_MS = 200.0
BUILD_BUDGET_S = 15 * 60  # more than this (estimated from the first 2,000) is too slow to build here
READY_TIMEOUT_S = 900.0
PARTIAL_MARK = "is being summarised"  # the monitoring page, while a fold runs: figures as of the last one


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --- the trails -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trail:
    """A built trail: its data directory and what the pages need to address it."""

    n: int
    directory: Path
    tokens: dict[str, str]
    subjects: int
    version: str
    built: dict

    @property
    def home(self) -> Path:
        return self.directory / "home"

    def request_id(self, i: int) -> str:
        return f"bench-{i:07d}"

    def subject_id(self, k: int) -> str:
        return f"subject-{k:06d}"


def _built_marker(directory: Path) -> Path:
    return directory / "built.json"


def trail(n: int, rebuild: bool) -> Trail:
    """The cached trail of ``n`` decisions, built first if missing (or ``rebuild``)."""
    directory = CACHE / f"console-{n}"
    marker = _built_marker(directory)
    if rebuild or not marker.exists():
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        _say(f"building a trail of {n:,} decisions in {directory} (a child process) ...")
        done = subprocess.run([sys.executable, __file__, "--build-into", str(directory), "--decisions", str(n)])
        if done.returncode != 0 or not marker.exists():
            raise SystemExit(f"building the trail of {n:,} decisions failed (exit {done.returncode})")
    else:
        _say(f"reusing the trail of {n:,} decisions in {directory} (--rebuild for a new one)")
    built = json.loads(marker.read_text())
    tokens = json.loads((directory / "tokens.json").read_text())
    return Trail(n, directory, tokens, built["subjects"], built["version"], built)


def build_into(directory: Path, n: int) -> None:
    """In this (child) process: train and register the model, make API keys, then ``n`` decisions
    through DecisionService in batches of 64; write ``built.json`` last (a trail without it is
    rebuilt)."""
    home = directory / "home"
    os.environ["VERDICT_HOME"] = str(home)  # keys, root, keyring: in the trail's own data directory
    # lazy: imported after VERDICT_HOME is set, in the child only (the parent never builds services)
    from tests.support.gateway_server import prepare_home
    from verdict.audit.records import format_time
    from verdict.gateway.api_models import DecisionRequest, DecisionResponse
    from verdict.gateway.datasets import load_dataset
    from verdict.gateway.service import build_services
    from verdict.gateway.settings import load_settings
    from verdict.gateway.training import train

    model_dir = train(MODEL, directory / "model").directory
    store_url = (home / "store").as_uri()
    tokens = prepare_home(home, model_dir, store_url=store_url)
    tokens_file = directory / "tokens.json"
    tokens_file.write_text(json.dumps(tokens))
    tokens_file.chmod(0o600)
    services = build_services(load_settings(store=store_url, bootstrap=False), say=_say)
    rows = load_dataset(MODEL).rows
    subjects = max(1, n // PER_SUBJECT)
    end = _dt.datetime.now(_dt.UTC).replace(microsecond=0)
    start = end - _dt.timedelta(days=DAYS)
    step = (end - start) / n
    position = 0  # the decision being made: the clock says when, spread over DAYS

    def clock() -> str:
        return format_time(start + step * position)

    services.decisions.clock = clock  # received_at, decided_at and the keyring's "now" walk the 90 days
    version = services.models.serving_manifest(MODEL, None).version
    started = time.perf_counter()
    warned = False
    try:
        for first in range(0, n, BATCH):
            batch = []
            for i in range(first, min(n, first + BATCH)):
                position = i
                batch.append(
                    services.decisions.prepare(
                        DecisionRequest(
                            model=MODEL,
                            request_id=f"bench-{i:07d}",
                            subject_id=f"subject-{i % subjects:06d}",
                            attributes=rows[i % len(rows)],
                        )
                    )
                )
            answers = services.decisions.decide_batch(batch)
            refused = [a for a in answers if not isinstance(a, DecisionResponse)]
            if refused:
                raise SystemExit(f"decision refused while building: {refused[0]!r}")
            done = first + len(batch)
            elapsed = time.perf_counter() - started
            if done // 10_000 != first // 10_000 or (done >= 2_000 and not warned):
                rate = done / elapsed
                _say(f"  {done:,} / {n:,} decisions ({rate:,.0f}/s, about {(n - done) / rate:,.0f} s to go)")
                if not warned and done >= 2_000:
                    warned = True
                    if n / rate > BUILD_BUDGET_S:
                        _say(
                            f"  WARNING: at this rate the trail takes about {n / rate / 60:,.0f} min "
                            f"(budget {BUILD_BUDGET_S // 60} min)"
                        )
    finally:
        services.lane.writer.close()  # the closing checkpoint
        if services.replays is not None:
            services.replays.close()
        if services.witnessing is not None:
            services.witnessing.close()
    seconds = time.perf_counter() - started
    built = {
        "decisions": n,
        "subjects": subjects,
        "version": version,
        "seconds": round(seconds, 1),
        "rate": round(n / seconds, 1),
        "first_decided_at": format_time(start),
        "last_decided_at": format_time(start + step * (n - 1)),
        "built_at": format_time(_dt.datetime.now(_dt.UTC)),
    }
    _built_marker(directory).write_text(json.dumps(built, indent=2))
    _say(f"  built {n:,} decisions in {seconds:,.0f} s ({n / seconds:,.0f} decisions/s)")


# --- the pages ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    """One console page: ``request`` makes one view of it on a server (a signed-in client)."""

    name: str
    request: Callable[[Session, random.Random], httpx.Response]


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    if match is None:
        raise RuntimeError(f"no csrf token in the page: {html[:300]}")
    return match[1]


@dataclass
class Session:
    """A signed-in console session on one server, and what was measured through it."""

    trail: Trail
    server: GatewayServer
    client: httpx.Client = field(init=False)
    csrf: str = ""
    replay_id: str | None = None
    first: dict[str, Sample] = field(default_factory=dict)  # page -> its first view after start
    samples: dict[str, list[Sample]] = field(default_factory=dict)  # page -> measured views
    cold: bool = True  # the monitoring state kept by an earlier run removed before start
    monitor_state_kept: bool = False
    ready_s: float = 0.0
    quiet_s: float = 0.0
    background_cpu_s: float = 0.0

    def sign_in(self) -> None:
        self.client = httpx.Client(base_url=self.server.url, timeout=600)
        form = self.client.get("/console/sign-in")
        answer = self.client.post(
            "/console/sign-in", data={"api_key": self.trail.tokens["admin"], "csrf": _csrf(form.text)}
        )
        if answer.status_code != 303:
            raise RuntimeError(f"sign-in refused: {answer.status_code} {answer.text[:300]}")

    def view(self, page: Page, rng: random.Random) -> Sample:
        started = time.perf_counter()
        answer = page.request(self, rng)
        client_ms = (time.perf_counter() - started) * 1000
        partial = PARTIAL_MARK in answer.text
        return Sample(answer.headers.get("x-request-id", ""), answer.status_code, client_ms, partial=partial)


@dataclass
class Sample:
    request_id: str
    status: int
    client_ms: float
    server_ms: float | None = None
    partial: bool = False  # the monitoring page said the trail was still being summarised


def _decision(s: Session, rng: random.Random) -> httpx.Response:
    return s.client.get(f"/console/decisions/{s.trail.request_id(rng.randrange(s.trail.n))}")


def _subject(s: Session, rng: random.Random) -> httpx.Response:
    subject = s.trail.subject_id(rng.randrange(s.trail.subjects))
    return s.client.post("/console/subjects", data={"subject_id": subject, "csrf": s.csrf})


def _replay(s: Session, rng: random.Random) -> httpx.Response:
    return s.client.get(f"/console/replays/{s.replay_id}")


def _get(path: str) -> Callable[[Session, random.Random], httpx.Response]:
    return lambda s, rng: s.client.get(path)


def _model(s: Session, rng: random.Random) -> httpx.Response:
    return s.client.get(f"/console/models/{MODEL}/{s.trail.version}")


PAGES = (
    Page("/console/decisions", _get("/console/decisions")),
    Page("/console/decisions/{request_id}", _decision),
    Page("POST /console/subjects", _subject),
    Page("/console/replays", _get("/console/replays")),
    Page("/console/replays/{id}", _replay),
    Page("/console/trail", _get("/console/trail")),
    Page("/console/models", _get("/console/models")),
    Page("/console/models/{name}/{version}", _model),
    Page("/console/monitoring", _get("/console/monitoring")),
)


def start_replay(s: Session, rng: random.Random) -> None:
    """One decision replayed through the console's form, waited for: the replay page then shows its report."""
    request_id = s.trail.request_id(rng.randrange(s.trail.n))
    answer = s.client.post(
        "/console/replays",
        data={"mode": "request_id", "request_id": request_id, "purpose": "console benchmark", "csrf": s.csrf},
    )
    location = answer.headers.get("location", "")
    if answer.status_code != 303 or not location.startswith("/console/replays/"):
        _say(f"  {s.trail.n:,}: replay not started ({answer.status_code}); the replay page is skipped")
        return
    s.replay_id = location.rsplit("/", 1)[1]
    for _ in range(600):
        page = s.client.get(location)
        state = re.search(r'id="replay-state">(\w+)', page.text)
        if state is not None and state[1] not in ("queued", "running"):
            return
        time.sleep(0.5)
    _say(f"  {s.trail.n:,}: replay {s.replay_id} still running after 5 minutes")


def access_latencies(server: GatewayServer) -> dict[str, float]:
    """request id -> the access line's latency_ms, from the server's JSON log."""
    found: dict[str, float] = {}
    assert server.log_path is not None
    for line in server.log_path.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("logger") == "verdict.access" and "latency_ms" in entry and "request_id" in entry:
            found[entry["request_id"]] = float(entry["latency_ms"])
    return found


# --- the run --------------------------------------------------------------------------------------------------------


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def _cell(values: list[float]) -> str:
    return f"{statistics.median(values):7.1f} / {_p95(values):7.1f}" if values else f"{'-':>17}"


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_quiet(server: GatewayServer, timeout_s: float = 900.0) -> tuple[float, float]:
    """Wait until the server uses (almost) no CPU: what it started in the background (the
    monitoring fold) is done. Returns (seconds waited, CPU seconds it used meanwhile)."""
    assert server.process is not None
    pid, started = server.process.pid, time.perf_counter()
    first = last = _cpu_s(pid)
    while time.perf_counter() - started < timeout_s:
        time.sleep(0.5)
        now = _cpu_s(pid)
        if now - last < 0.03:
            break
        last = now
    return time.perf_counter() - started, last - first


def first_views(s: Session, rng: random.Random) -> None:
    """Start the server (cold), sign in, and view each page once, in page order, at once."""
    monitor_state = s.trail.home / "monitor"
    s.monitor_state_kept = monitor_state.exists() and not s.cold
    if s.cold:
        shutil.rmtree(monitor_state, ignore_errors=True)  # as on the first start on this trail
    started = time.perf_counter()
    s.server.start(wait=False)
    s.server.wait_ready(READY_TIMEOUT_S)
    s.ready_s = time.perf_counter() - started
    s.sign_in()
    s.csrf = _csrf(s.client.get("/console/decisions").text)
    for page in PAGES:
        if page.name == "/console/replays/{id}":
            start_replay(s, rng)
            if s.replay_id is None:
                continue
        s.first[page.name] = s.view(page, rng)
    s.quiet_s, s.background_cpu_s = wait_quiet(s.server)


def measure(trails: list[Trail], requests: int, seed: int, cold: bool) -> list[Session]:
    env = {"VERDICT_LOG_FORMAT": "json", "VERDICT_LOG_LEVEL": "info"}
    sessions = [Session(t, GatewayServer(t.home, env=env), cold=cold) for t in trails]
    rng = random.Random(seed)
    try:
        for s in sessions:  # one at a time: a server's start-up work does not slow the other's first views
            _say(f"starting the server on {s.trail.n:,} decisions, first views ...")
            first_views(s, rng)
        _say(f"{requests} views per page and trail ...")
        for page in PAGES:
            if not all(p.first.get(page.name, Sample("", 0, 0)).status == 200 for p in sessions):
                continue
            for s in sessions:
                s.samples[page.name] = []
            for _ in range(requests):
                for s in sessions:  # alternating: both servers see the same machine noise
                    s.samples[page.name].append(s.view(page, rng))
    finally:
        for s in sessions:
            s.server.stop()
    for s in sessions:
        latencies = access_latencies(s.server)
        for sample in [*s.first.values(), *(x for v in s.samples.values() for x in v)]:
            sample.server_ms = latencies.get(sample.request_id)
    return sessions


def _verdict(values: list[float]) -> str:
    if not values:
        return "not measured"
    if _p95(values) < TARGET_MS:
        return "met"
    return "median only" if statistics.median(values) < TARGET_MS else "MISSED"


def report(sessions: list[Session], requests: int) -> None:
    small, large = sessions
    print(
        f"\nconsole pages: server time (access line latency_ms), ms, median / p95 of {requests} views after a "
        f"first view; trails of {small.trail.n:,} and {large.trail.n:,} decisions"
    )
    for s in sessions:
        b = s.trail.built
        state = "kept from an earlier start" if s.monitor_state_kept else "none (folded from scratch)"
        print(
            f"  {s.trail.n:>7,} decisions: {b['subjects']:,} subjects x {PER_SUBJECT}, decided "
            f"{b['first_decided_at'][:10]} .. {b['last_decided_at'][:10]}; built at {b['rate']:,.0f} decisions/s "
            f"({b['seconds']:,.0f} s, real decision path)\n"
            f"           server ready {s.ready_s:,.1f} s after start; monitoring state at start: {state}; "
            f"after the first views it worked on another {s.quiet_s:,.1f} s ({s.background_cpu_s:,.1f} s CPU) "
            f"before going quiet"
        )
    n1, n2 = f"{small.trail.n // 1000:,}k", f"{large.trail.n // 1000:,}k"
    header = (
        f"{'page':<34} {'first ' + n1:>9} {'first ' + n2:>10} {n1 + ' med / p95':>17} {n2 + ' med / p95':>17} "
        f"{n2 + ' max':>9} {'client ' + n2:>11} {'ratio':>6}  target {TARGET_MS:.0f} ms (p95)"
    )
    print(header)
    print("-" * len(header))
    met: list[str] = []
    missed: list[str] = []
    absent: list[str] = []
    slow_first: list[str] = []
    for page in PAGES:
        first = [s.first.get(page.name) for s in sessions]
        if first[1] is not None and first[1].server_ms is not None and first[1].server_ms >= TARGET_MS:
            slow_first.append(f"{page.name} {first[1].server_ms:,.0f} ms")
        if page.name not in large.samples:
            statuses = ", ".join(
                f"{s.trail.n:,}: {f.status if f else 'not started'}" for s, f in zip(sessions, first, strict=True)
            )
            print(f"{page.name:<34} not available ({statuses})")
            absent.append(page.name)
            continue
        errors = [x for s in sessions for x in s.samples[page.name] if x.status != 200 or x.server_ms is None]
        few = [x.server_ms for x in small.samples[page.name] if x.server_ms is not None]
        many = [x.server_ms for x in large.samples[page.name] if x.server_ms is not None]
        client = [x.client_ms for x in large.samples[page.name]]
        firsts = [
            f"{f.server_ms:.0f}{'*' if f.partial else ''}" if f and f.server_ms is not None else "-" for f in first
        ]
        partial = sum(x.partial for x in large.samples[page.name])
        ratio = statistics.median(many) / statistics.median(few) if few and many else float("nan")
        verdict = _verdict(many)
        (met if verdict == "met" else missed).append(page.name)
        print(
            f"{page.name:<34} {firsts[0]:>9} {firsts[1]:>10} {_cell(few)} {_cell(many)} "
            f"{max(many) if many else float('nan'):9.1f} {statistics.median(client):11.1f} {ratio:5.2f}x  {verdict}"
            + (f" ({len(errors)} views not 200 or unlogged)" if errors else "")
            + (f" ({partial} views still summarising)" if partial else "")
        )
    print(
        "first = the page's first view after the server started (cold: no chain leaves kept yet, the monitoring "
        "fold started at start-up may still be running; * = the page said the trail was still being summarised, its "
        "figures not yet complete); ratio = median at the large trail / median at the baseline"
    )
    print(
        f"target p95 < {TARGET_MS:.0f} ms at {large.trail.n:,} decisions: met by {len(met)} of {len(PAGES)} pages"
        + (f"; MISSED by {', '.join(missed)}" if missed else "")
        + (f"; not available: {', '.join(absent)}" if absent else "")
    )
    print(f"first views over {TARGET_MS:.0f} ms at {large.trail.n:,}: {', '.join(slow_first) or 'none'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--decisions", type=int, default=TARGET_DECISIONS, help="the large trail (default 100,000)")
    parser.add_argument("--baseline", type=int, default=BASELINE, help="the small trail (default 1,000)")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK:,} / {BASELINE:,} decisions: a fast check")
    parser.add_argument("--requests", type=int, default=30, help="views per page and trail after the first")
    parser.add_argument("--rebuild", action="store_true", help="build the trails anew (else reuse benchmarks/.cache)")
    parser.add_argument(
        "--keep-monitor-state",
        action="store_true",
        help="start with the monitoring state an earlier run kept (a restart); default: none (a first start)",
    )
    parser.add_argument("--seed", type=int, default=20)
    parser.add_argument("--build-into", type=Path, help=argparse.SUPPRESS)  # the child that builds one trail
    args = parser.parse_args()
    if args.build_into is not None:
        build_into(args.build_into, args.decisions)
        return 0
    large = QUICK if args.quick else args.decisions
    if not 1 <= args.baseline < large or args.requests < 1:
        parser.error("need 1 <= --baseline < --decisions and --requests >= 1")
    trails = [trail(args.baseline, args.rebuild), trail(large, args.rebuild)]
    sessions = measure(trails, args.requests, args.seed, cold=not args.keep_monitor_state)
    report(sessions, args.requests)
    if large != TARGET_DECISIONS:
        print(f"NOTE: measured at {large:,} decisions, not the target's {TARGET_DECISIONS:,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
