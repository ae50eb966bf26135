"""Assembling a running gateway from settings: store, keys, chain, models.

Why separate from the HTTP app: tests and benchmarks build the same services
the server runs with, and every start-up failure (store unreachable, bucket
without Object Lock, a second writer on this chain) stops the process with
one clear message instead of serving unaudited decisions.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

from audit.chain import ChainWriter
from audit.index import RequestIndex
from audit.lease import LeaseOptions
from audit.signing import FileKeyStore
from audit.stores import ObjectExists, StoreError, WormStore, WriteProbe, open_store
from gateway import environment
from gateway.apikeys import ApiKeyStore
from gateway.app import Services
from gateway.bootstrap import ensure_reference_model
from gateway.decisions import AuditLane, DecisionService
from gateway.lookups import LookupService
from gateway.metrics import GatewayMetrics
from gateway.models_cache import ModelCache
from gateway.registry import Registry
from gateway.settings import ServiceSettings

__all__ = ["build_services", "publish_environment"]


def publish_environment(store: WormStore, fingerprint: environment.EnvironmentFingerprint) -> str:
    """Store this process's environment manifest content-addressed; return its sha256."""
    data = environment.encode(fingerprint)
    digest = hashlib.sha256(data).hexdigest()
    try:
        store.put_once(f"environments/sha256/{digest}", data)
    except ObjectExists:
        pass  # same content, same address: written by an earlier start
    return digest


def build_services(settings: ServiceSettings, say: Callable[[str], None] = print) -> Services:
    store = open_store(settings.store)
    registry = Registry(store)
    if settings.bootstrap:
        ensure_reference_model(registry, say=say)
    models = ModelCache(registry)
    for name in registry.names():  # load production models now: a cold first request would time out
        try:
            version = models.resolve(name, None)
        except Exception:  # noqa: BLE001 - a model without a production version is simply not preloaded
            continue
        models.loaded(name, version)
    fingerprint = environment.capture(device=models.device(), seed=0)
    env_sha = publish_environment(store, fingerprint)
    metrics = GatewayMetrics()
    writer = None
    if settings.audit:
        signer, keyring = _signer(settings, say)
        writer = ChainWriter.open(store, settings.chain_id, signer, keyring=keyring, created_by="verdict serve",
                                  checkpoint_every=settings.checkpoint_every,
                                  checkpoint_interval=settings.checkpoint_interval_s,
                                  lease=LeaseOptions(ttl=settings.lease_ttl_s, renew_every=settings.lease_renew_s,
                                                     skew=settings.lease_skew_s))
    lane = AuditLane(writer, metrics)
    decisions = DecisionService(models, lane, RequestIndex(store) if writer else None, env_sha, metrics,
                                retry_after_s=settings.retry_after_s, explain=settings.explain,
                                claim_wait_s=settings.request_timeout_s)
    lookups = LookupService(store, lane, models, settings.retry_after_s)
    replays = None
    if writer is not None:
        from replay.service import ReplayService

        # Each replica writes replay evidence to its own chain: one writer per chain.
        replays = ReplayService(settings.store, replay_chain=f"replay-{settings.chain_id}", workers=1,
                                signer=signer, keyring=keyring)
    return Services(settings=settings, models=models, lane=lane, decisions=decisions, lookups=lookups,
                    metrics=metrics, apikeys=ApiKeyStore(settings.apikeys_file),
                    readiness=_readiness(store, lane, models, settings.unready_after_failures, settings.retry_after_s),
                    replays=replays)


def _signer(settings: ServiceSettings, say: Callable[[str], None]):  # noqa: ANN202 - (Signer, KeyRing)
    """File keys by default (a dev key is generated on first start); AWS KMS when configured."""
    if settings.kms_key_id:
        from audit.kms import KmsEd25519Signer, KmsKeyRing

        signer = KmsEd25519Signer(settings.kms_key_id.format(chain_id=settings.chain_id))
        previous = [k.strip() for k in settings.kms_previous_key_ids.split(",") if k.strip()]
        return signer, KmsKeyRing.from_key_ids(previous) if previous else None
    keys = FileKeyStore.default()
    signer, created = keys.init()
    if created:
        say(f"Generated a development signing key {signer.key_id} in {keys.directory} (mode 0600)")
    return signer, keys


DISABLED_FOR_BENCHMARK = "disabled: unsafe benchmark mode (VERDICT_UNSAFE_BENCHMARK=1)"


def _readiness(store: WormStore, lane: AuditLane, models: ModelCache,
               unready_after: int, retry_after_s: float) -> Callable[[], dict[str, str]]:
    """Ready = a model is loaded, the store answers and can take appends, and
    the chain writer has not been stopped by a permanent error.

    "Can take appends": after ``unready_after`` consecutive failed appends (a
    full disk, a store refusing writes) the store check fails, so a load
    balancer stops sending decisions that could only be refused. Recovery
    needs no traffic: while failing, each readiness check asks the store to
    prove it could write (a scratch write where the store can do one,
    _append_health); once it can, the replica is ready again and the next
    real append resets the count. A store that cannot probe without writing
    an object (S3 Object Lock) is reported ready again ``retry_after_s``
    after its last failure, so that one request can try (half-open). A single failed append does
    not make the process unready: it may be one lost request.
    """

    def check() -> dict[str, str]:
        checks = {"models": "ok" if models.loaded_versions() else "no model loaded"}
        try:
            store.exists("keys/readiness-probe")
            checks["store"] = _append_health(store, lane, unready_after, retry_after_s)
        except StoreError as exc:
            checks["store"] = f"unreachable: {exc}"
        if lane.writer is None:
            checks["signer"] = DISABLED_FOR_BENCHMARK
        elif lane.stopped:
            checks["signer"] = f"chain writer stopped: {lane.last_error}"
        else:
            checks["signer"] = "ok"
        return checks

    return check


def _append_health(store: WormStore, lane: AuditLane, unready_after: int, retry_after_s: float) -> str:
    failures = lane.consecutive_failures
    if failures < unready_after:
        return "ok"
    if isinstance(store, WriteProbe):
        try:
            store.probe_write()
            return "ok"  # the store can write again: let traffic in; the next append confirms it
        except StoreError as exc:
            return f"cannot take appends: {failures} consecutive appends failed (last: {lane.last_error}); now: {exc}"
    if time.monotonic() - lane.last_failure_at >= retry_after_s:
        return "ok"  # half-open: let one request try the store
    return f"cannot take appends: {failures} consecutive appends failed (last: {lane.last_error})"
