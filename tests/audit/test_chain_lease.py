"""One writer per chain, enforced by a lease in the store (audit/lease.py,
docs/audit-format.md §9a), on the filesystem store and on S3 Object Lock
(moto over HTTP).

The holder is a real second process (tests/support-style script below): a
second writer refuses at open naming it; a SIGKILLed holder is proved dead
and replaced at once; a frozen (SIGSTOPped) holder's lease expires and a new
writer takes over, and the old one, when it wakes, finds the other lease and
stops; a clean close releases the lease. No test asserts how long anything
took: waits are for an event (a lease document's own expiry, a thread ending).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest

from tests.audit.helpers import decisions, signer, wait_out_newest_lease
from verdict.audit import layout
from verdict.audit.chain import ChainConflict, ChainWriter, LeaseHeld, LeaseLost
from verdict.audit.lease import Holder, LeaseDoc, LeaseOptions, newest_lease
from verdict.audit.records import format_time
from verdict.audit.stores import FilesystemStore, open_store
from verdict.audit.verifier import verify_store

REPO = Path(__file__).resolve().parents[2]
CHAIN = "lease-0"
DEADLINE_S = 60.0
FAST = LeaseOptions(ttl=5.0, renew_every=1.0, skew=0.0)

_HOLDER = r"""
import sys, time
from verdict.audit.chain import ChainConflict, ChainWriter
from verdict.audit.lease import LeaseOptions
from verdict.audit.stores import open_store
from tests.audit.helpers import decisions, signer
url, ttl, renew = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
writer = ChainWriter.open(open_store(url), "lease-0", signer(), created_by="lease-test-holder",
                          lease=LeaseOptions(ttl=ttl, renew_every=renew, skew=0.0))
writer.append_batch(decisions("holder-first", 3))
print("open", writer.size, flush=True)
for line in sys.stdin:
    command = line.strip()
    if command == "append":
        try:
            writer.append_batch(decisions(f"holder-{time.time_ns()}", 1))
            print("appended", writer.size, flush=True)
        except ChainConflict as exc:
            print("stopped:", exc, flush=True)
    elif command == "close":
        writer.close()
        print("closed", flush=True)
    elif command == "exit":
        break
"""


class HolderProcess:
    """The holding writer in its own process; commands over stdin."""

    def __init__(self, url: str, options: LeaseOptions = FAST) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, url, str(options.ttl), str(options.renew_every)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=env,
        )
        line = self.proc.stdout.readline()
        assert line.startswith("open "), line + self.proc.stderr.read()[-3000:]

    def command(self, text: str) -> str:
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def end(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
        self.proc.communicate(timeout=30)


@pytest.fixture(params=["filesystem", "s3"])
def store_url(request, tmp_path):
    if request.param == "filesystem":
        return (tmp_path / "store").as_uri()
    return request.getfixturevalue("s3_store_url")


@pytest.fixture
def holder_factory():
    holders: list[HolderProcess] = []

    def make(url: str, options: LeaseOptions = FAST) -> HolderProcess:
        holders.append(HolderProcess(url, options))
        return holders[-1]

    yield make
    for h in holders:
        h.end()


def _open(url: str, options: LeaseOptions = FAST) -> ChainWriter:
    return ChainWriter.open(open_store(url), CHAIN, signer(), created_by="lease-test", lease=options)


def _newest(url: str) -> tuple[int, LeaseDoc]:
    found = newest_lease(open_store(url), CHAIN)
    assert found is not None and found[1] is not None
    return found  # type: ignore[return-value]


def test_a_second_writer_refuses_at_open_naming_the_holder(store_url, holder_factory):
    holder = holder_factory(store_url, LeaseOptions(ttl=120, renew_every=30, skew=5))
    store = open_store(store_url)
    before = sorted(store.list_keys(layout.chain_prefix(CHAIN)))
    with pytest.raises(LeaseHeld) as refused:
        _open(store_url)
    message = str(refused.value)
    assert isinstance(refused.value, ChainConflict)
    assert f"another writer owns chain {CHAIN!r}" in message
    assert f"pid {holder.proc.pid}" in message and "lease-test-holder" in message and "until " in message
    assert refused.value.holder.pid == holder.proc.pid
    assert sorted(store.list_keys(layout.chain_prefix(CHAIN))) == before  # the refused writer wrote nothing
    assert holder.command("append").startswith("appended")  # and the holder was not cut off


def test_a_sigkilled_holder_on_this_machine_is_replaced_at_once_and_recovered(store_url, holder_factory):
    holder = holder_factory(store_url, LeaseOptions(ttl=3600, renew_every=600, skew=5))  # expiry would take an hour
    assert holder.command("append") == "appended 5"
    n, _ = _newest(store_url)
    holder.proc.send_signal(signal.SIGKILL)
    holder.proc.wait(timeout=30)
    writer = _open(store_url)  # the holder is proved dead: same host, boot, PID namespace; its PID is gone
    try:
        assert writer.size == 5  # recovered the killed writer's records
        assert writer.lease.n == n + 1 and writer.lease.holder.pid == os.getpid()
        writer.append_batch(decisions("after-kill", 2))
    finally:
        writer.close()
    assert verify_store(open_store(store_url)).ok


def test_a_frozen_holder_loses_its_lease_at_expiry_and_stops_when_it_wakes(store_url, holder_factory):
    holder = holder_factory(store_url, FAST)
    os.kill(holder.proc.pid, signal.SIGSTOP)  # alive but silent: a hung or partitioned writer
    with pytest.raises(LeaseHeld, match=f"pid {holder.proc.pid}"):
        _open(store_url)
    writer = None
    for _ in range(3):  # a renewal in flight at SIGSTOP may land once more: then wait out that one too
        wait_out_newest_lease(open_store(store_url), CHAIN, FAST.skew)
        try:
            writer = _open(store_url)
            break
        except LeaseHeld:
            continue
    assert writer is not None, "the frozen holder's lease was still held after three of its expiries"
    try:
        assert writer.size == 4
        writer.append_batch(decisions("new-owner", 1))
        os.kill(holder.proc.pid, signal.SIGCONT)
        answer = holder.command("append")
        assert answer.startswith("stopped:"), answer
        assert "lost its lease" in answer and f"pid {os.getpid()}" in answer  # names the new holder
        assert holder.command("append").startswith("stopped:")  # for good
        writer.append_batch(decisions("still-owner", 1))
    finally:
        writer.close()
    report = verify_store(open_store(store_url))
    assert report.ok, report.first_failure
    assert report.records == 6


def test_a_clean_close_releases_the_lease_at_once(store_url, holder_factory):
    holder = holder_factory(store_url, LeaseOptions(ttl=3600, renew_every=600, skew=5))
    assert holder.command("close") == "closed"  # the holder process stays alive
    n, doc = _newest(store_url)
    assert doc.released and doc.holder.pid == holder.proc.pid and doc.expires_at == doc.acquired_at
    writer = _open(store_url)
    try:
        assert writer.size == 4 and writer.lease.n == n + 1
    finally:
        writer.close()
    assert holder.proc.poll() is None


def test_a_renewal_that_finds_a_foreign_lease_stops_the_writer(tmp_path, caplog):
    store = FilesystemStore(tmp_path / "store")
    writer = ChainWriter.open(store, CHAIN, signer(), lease=LeaseOptions(ttl=30, renew_every=0.05, skew=0))
    writer.append_batch(decisions("before", 2))
    other = Holder(host="elsewhere", pid=4242, token="f" * 32, created_by="intruder")
    caplog.set_level(logging.ERROR, logger="audit.lease")
    # Another writer wins the race for our next lease number (as after our lease expired unseen).
    n = writer.lease.n
    while True:
        now = time.time()
        doc = LeaseDoc(
            chain_id=CHAIN, n=n + 1, holder=other, acquired_at=format_time_ts(now), expires_at=format_time_ts(now + 30)
        )
        try:
            store.put_once(layout.lease_key(CHAIN, n + 1), msgspec.json.encode(doc))
            break
        except Exception:  # noqa: BLE001 - our renewal got there first: try the next number
            n += 1
    writer.lease.wait_renewals_stopped(DEADLINE_S)  # the renewal thread ends when it finds the foreign lease
    assert writer.lease.lost is not None, "the renewal never noticed the foreign lease"
    with pytest.raises(LeaseLost, match="intruder \\(pid 4242 on host elsewhere"):
        writer.append_batch(decisions("after", 1))
    with pytest.raises(LeaseLost):  # stays stopped
        writer.checkpoint()
    assert any("intruder" in r.getMessage() and "lost its lease" in r.getMessage() for r in caplog.records)
    writer.close()  # writes nothing: the lease is someone else's
    assert _leases(store)[-1] == layout.lease_key(CHAIN, n + 1)


def test_of_two_writers_racing_for_the_next_lease_exactly_one_wins(tmp_path):
    """Both read the same free lease n; the racer's put of n + 1 lands first, so
    ours fails write-once and we refuse, naming the racer; nothing else is written."""
    store = FilesystemStore(tmp_path / "store")
    ChainWriter.open(store, CHAIN, signer()).close()  # leases 0 (acquired) and 1 (released)
    racer = Holder(host="elsewhere", pid=777, token="e" * 32, created_by="racer")

    class Racing:
        def __getattr__(self, name):
            return getattr(store, name)

        def put_once(self, key, data):
            if key == layout.lease_key(CHAIN, 2) and not store.exists(key):
                now = time.time()
                doc = LeaseDoc(
                    chain_id=CHAIN,
                    n=2,
                    holder=racer,
                    acquired_at=format_time_ts(now),
                    expires_at=format_time_ts(now + 300),
                )
                store.put_once(key, msgspec.json.encode(doc))  # the racer wins
            return store.put_once(key, data)

    with pytest.raises(LeaseHeld, match="racer \\(pid 777 on host elsewhere") as refused:
        ChainWriter.open(Racing(), CHAIN, signer())
    assert refused.value.holder == racer
    assert _leases(store) == [layout.lease_key(CHAIN, n) for n in range(3)]


def test_the_verifier_accepts_lease_objects_but_not_other_strays(tmp_path):
    store = FilesystemStore(tmp_path / "store")
    ChainWriter.open(store, CHAIN, signer()).close()
    assert len(_leases(store)) == 2  # acquired, released
    assert verify_store(store).ok
    store.put_once(f"chains/{CHAIN}/leases/notes", b"x")
    report = verify_store(store)
    assert not report.ok and report.first_failure.reason == "unexpected_object"


def _leases(store) -> list[str]:
    return list(store.list_keys(layout.leases_prefix(CHAIN)))


def format_time_ts(ts: float) -> str:
    import datetime as dt

    return format_time(dt.datetime.fromtimestamp(ts, dt.UTC))
