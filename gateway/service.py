"""Assembling a running gateway from settings: store, keys, chain, models.

Why separate from the HTTP app: tests and benchmarks build the same services
the server runs with, and every start-up failure (store unreachable, bucket
without Object Lock, a second writer on this chain) stops the process with
one clear message instead of serving unaudited decisions.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

from verdict.audit import layout
from verdict.audit.chain import ChainWriter, KeyRing, default_origin
from verdict.audit.config import data_dir
from verdict.audit.index import RequestIndex
from verdict.audit.key_wrapping import KekError
from verdict.audit.kms import KmsEd25519Signer, KmsKeyRing
from verdict.audit.lease import LeaseOptions
from verdict.audit.personal_data import (
    PersonalData,
    RetentionPolicy,
    configured_keyring,
    keyring_directory,
    keyring_exists,
)
from verdict.audit.signing import FileKeyStore, Signer
from verdict.audit.stores import ObjectExists, StoreError, WormStore, WriteProbe, open_store
from verdict.audit.trust import RootKey, TrustError, TrustPolicy, configured_root, load_policy, local_root_path
from verdict.audit.witness_client import WitnessClient, WitnessClientError
from verdict.audit.witnessing import CheckpointWitnessing, held_notes
from verdict.gateway import environment
from verdict.gateway.apikeys import ApiKeyStore
from verdict.gateway.bootstrap import ensure_reference_model
from verdict.gateway.decisions import AuditLane, DecisionService
from verdict.gateway.engine import Engine
from verdict.gateway.fail_closed import FailClosedLog
from verdict.gateway.lookups import LookupService
from verdict.gateway.metrics import GatewayMetrics
from verdict.gateway.monitoring import TrailMonitor
from verdict.gateway.registry import Registry, RegistryError
from verdict.gateway.registry_log import RegistryLog
from verdict.gateway.service_errors import ModelNotPromoted, ModelVersionRevoked, ServiceError
from verdict.gateway.settings import ServiceSettings, SettingsError
from verdict.gateway.subjects import SUBJECTS_CHAIN, SubjectRights
from verdict.replay.service import ReplayService

__all__ = ["DISABLED_FOR_BENCHMARK", "Readiness", "Services", "build_services", "publish_environment"]

_log = logging.getLogger(__name__)

DISABLED_FOR_BENCHMARK = "disabled: unsafe benchmark mode (VERDICT_UNSAFE_BENCHMARK=1)"
"""The readiness value of a check switched off on purpose (benchmarks only): still ready."""


@dataclass(frozen=True)
class Readiness:
    """What /readyz reports: each check's value (``"ok"`` or why not), and the model
    versions this replica cannot serve, by ``name:version``, with the reason.

    Why the unready models are not a check: the replica stays ready while at least
    one model serves (the ``models`` check), so that one broken model never takes
    the others out of the load balancer; its requests get 503 model-unavailable."""

    checks: dict[str, str]
    unready_models: dict[str, str]

    @property
    def ready(self) -> bool:
        return all(v in ("ok", DISABLED_FOR_BENCHMARK) for v in self.checks.values())


@dataclass
class Services:
    """Everything the routes need, built by :func:`build_services`. Here, not in the HTTP
    layer, so that assembling and using the services never imports the web framework."""

    settings: ServiceSettings
    models: Engine
    lane: AuditLane
    decisions: DecisionService
    lookups: LookupService
    metrics: GatewayMetrics
    apikeys: ApiKeyStore
    readiness: Callable[[], Readiness]  # see _readiness
    replays: ReplayService | None = None  # the examiner API
    subjects: SubjectRights | None = None  # subject access, erasure, holds (None: sealing off)
    witnessing: CheckpointWitnessing | None = None  # checkpoints kept and cosigned
    monitor: TrailMonitor | None = None  # monitoring figures folded from the trail (console, /metrics)


def publish_environment(store: WormStore, fingerprint: environment.EnvironmentFingerprint) -> str:
    """Store this process's environment manifest content-addressed; return its sha256."""
    data = environment.encode(fingerprint)
    digest = hashlib.sha256(data).hexdigest()
    with contextlib.suppress(ObjectExists):  # same content, same address: written by an earlier start
        store.put_once(f"environments/sha256/{digest}", data)
    return digest


def build_services(settings: ServiceSettings, say: Callable[[str], None] = print) -> Services:
    store = open_store(settings.store)
    root, policy = _trust(settings, say)
    signer = keyring = None
    if settings.audit:
        signer, keyring = _signer(settings, say)
    registry = Registry(store)
    if settings.bootstrap:
        # Registration and promotion are recorded on the registry chain with this gateway's
        # key, certified by its root (spec §3 "registry").
        events = RegistryLog(store, signer, keyring=keyring, root=root, policy=policy) if signer else None
        ensure_reference_model(registry, say=say, events=events)
    metrics = GatewayMetrics()
    health = FailClosedLog(logging.getLogger("verdict.gateway.fail_closed"))

    def load_failed(name: str, version: str, reason: str) -> None:
        metrics.model_load_failures.labels(name, version).inc()
        health.failing(
            f"model:{name}:{version}",
            "model_unready",
            f"model {name} version {version} is unready: its requests fail closed (503 model-unavailable) "
            f"until it loads",
            model=name,
            version=version,
            reason=reason,
        )

    models = Engine(registry, on_load_failure=load_failed)
    metrics.models_unready.set_function(lambda: len(models.unready()))
    _preload(models, say)
    fingerprint = environment.capture(device=models.device(), seed=0)
    env_sha = publish_environment(store, fingerprint)
    metrics.set_build_info(
        version=fingerprint.project_version,
        python=fingerprint.python,
        torch=fingerprint.torch.version,
        device=models.device(),
    )
    metrics.watch_models(lambda: _loaded_models(models))
    writer = witnessing = None
    if signer is not None:
        held_dir = data_dir() / "trust" / "held"
        witnessing = CheckpointWitnessing(
            store,
            settings.chain_id,
            policy.witnesses,
            policy.witness_quorum,
            held_dir,
            timeout=settings.witness_timeout_s,
        )
        try:
            writer = ChainWriter.open(
                store,
                settings.chain_id,
                signer,
                keyring=keyring,
                created_by="verdict serve",
                checkpoint_every=settings.checkpoint_every,
                checkpoint_interval=settings.checkpoint_interval_s,
                lease=LeaseOptions(
                    ttl=settings.lease_ttl_s, renew_every=settings.lease_renew_s, skew=settings.lease_skew_s
                ),
                root=root,
                policy=policy,
                held_checkpoints=held_notes(held_dir, settings.chain_id) + _witnessed(policy, settings, say),
                on_checkpoint=witnessing.checkpointed,
                on_leaves=witnessing.appended,
            )
        except BaseException:
            witnessing.close()
            raise
    lane = AuditLane(writer, metrics, health)
    personal = subjects = None
    if settings.seal:
        personal, subjects = _personal_data(store, settings, signer, keyring, root, policy, say)
    decisions = DecisionService(
        models,
        lane,
        RequestIndex(store) if writer else None,
        env_sha,
        metrics,
        retry_after_s=settings.retry_after_s,
        explain=settings.explain,
        claim_wait_s=settings.request_timeout_s,
        trust=policy,
        personal=personal,
        retention=RetentionPolicy.parse(settings.retention),
        health=health,
    )
    lookups = LookupService(
        store, lane, models, settings.retry_after_s, trust=policy, personal=personal, subjects=subjects
    )
    # One per process: it folds the trail incrementally; the console and /metrics read its summary.
    monitor = TrailMonitor(store, models, personal, state_dir=data_dir() / "monitor")
    metrics.watch_monitor(monitor.collector())
    replays = None
    if writer is not None:
        # Each replica writes replay evidence to its own chain: one writer per chain.
        replays = ReplayService(
            settings.store,
            replay_chain=f"replay-{settings.chain_id}",
            workers=1,
            signer=signer,
            keyring=keyring,
            trust=policy,
            root=root,
            personal=personal,
        )
    return Services(
        settings=settings,
        models=models,
        lane=lane,
        decisions=decisions,
        lookups=lookups,
        metrics=metrics,
        apikeys=ApiKeyStore(settings.apikeys_file),
        readiness=_readiness(store, lane, models, settings.unready_after_failures, settings.retry_after_s, health),
        replays=replays,
        witnessing=witnessing,
        subjects=subjects,
        monitor=monitor,
    )


def _personal_data(
    store: WormStore,
    settings: ServiceSettings,
    signer: Signer | None,
    keyring: KeyRing | None,
    root: RootKey | None,
    policy: TrustPolicy,
    say: Callable[[str], None],
) -> tuple[PersonalData, SubjectRights | None]:
    """The data keyring that seals decisions (spec §3a) and the subject rights over it.
    Erasures a stopped process left half done are finished here, before any decision."""
    location = settings.keyring or None
    if not keyring_exists(location) and not settings.keyring_create and _holds_decisions(store):
        raise SettingsError(
            f"data keyring: the store already holds decisions but there is no data keyring at "
            f"{keyring_directory(location)}; restore the keyring (and its KEK) from backup or point VERDICT_KEYRING "
            f"at it. Only if none ever existed (a store written before sealing), start a new one with "
            f"VERDICT_KEYRING_CREATE=1 (keyring_create = true)"
        )
    try:
        data_keys = configured_keyring(location, settings.keyring_kek or None)
    except (ValueError, KekError, OSError, sqlite3.Error) as exc:
        raise SettingsError(f"data keyring: {exc}") from None
    personal = PersonalData(data_keys, RetentionPolicy.parse(settings.retention))
    if signer is None:  # unsafe benchmark mode: nothing recorded, so no erasure can be
        return personal, None
    log = RegistryLog(store, signer, keyring=keyring, root=root, policy=policy, chain_id=SUBJECTS_CHAIN)
    subjects = SubjectRights(store, personal, log)
    finished = subjects.recover()
    if finished:
        say(f"Finished {len(finished)} erasure(s) an earlier process left half done")
    return personal, subjects


def _holds_decisions(store: WormStore) -> bool:
    """Whether any decision was recorded in ``store`` (one listing call, stops at the first)."""
    return next(iter(store.list_keys(layout.INDEX_PREFIX)), None) is not None


def _preload(models: Engine, say: Callable[[str], None]) -> None:
    """Load every model's production version now (a cold first request would time out).

    Why nothing here stops the start: one broken version (a corrupt or altered
    artifact, a graph that breaks the model contract, a manifest that no longer
    decodes) must not take every other model down with it. The engine logs an
    ERROR line naming the version and the reason and remembers it as unready
    (/readyz and /v1/models name it; its requests get 503 model-unavailable);
    a model without a production version is not preloaded (requests must pin
    one), and a revoked production version is not loaded at all."""
    for name in models.registry.names():
        try:
            version = models.resolve(name, None)
        except ModelNotPromoted as exc:
            _log.debug("model %s not preloaded: %s", name, exc)
            continue
        except ModelVersionRevoked as exc:
            _log.warning("model %s not preloaded: %s", name, exc)
            continue
        except (RegistryError, StoreError) as exc:  # this model's routing cannot be read now; a request retries it
            _log.error("model %s not preloaded: its production alias cannot be read: %s", name, exc)
            continue
        try:
            models.loaded(name, version)
        except (ServiceError, RegistryError, StoreError):
            continue  # unready by name (the engine logged why); the others load and serve
    loaded, unready = models.loaded_versions(), models.unready()
    if unready:
        say(
            f"warning: serving {len(loaded)} model version(s); not serving "
            + "; ".join(f"{ref} ({reason})" for ref, reason in unready.items())
        )


def _trust(settings: ServiceSettings, say: Callable[[str], None]) -> tuple[RootKey | None, TrustPolicy]:
    """The root this gateway certifies its chains with (if it holds one) and the policy it verifies with.

    Embedded default: a root key file in the data directory, outside the
    store, created on first start. Production: ``trust_root = "kms:<key id>"``,
    or ``"none"`` with certificates issued beforehand by the root's holder
    (``verdict trust certify``) and the examiners' ``trust_policy``.
    """
    try:
        path = local_root_path(data_dir())
        existed = path.exists()
        root = configured_root(settings.trust_root, create=True)
        if not settings.trust_root and not existed and root is not None:
            say(
                f"Generated the trust root {root.key_id} in {path} (mode 0600, outside the store); "
                "`verdict trust export` writes the policy examiners verify with"
            )
        if settings.trust_policy:
            policy = load_policy(settings.trust_policy)
        elif root is not None:
            policy = root.policy()
        else:
            raise TrustError("bad_trust_policy", 'trust_root = "none" needs a trust_policy file')
    except TrustError as exc:
        raise SettingsError(f"trust: {exc.message}") from None
    if root is not None and root.key_id not in {r.key_id for r in policy.roots}:
        raise SettingsError(f"trust: the root {root.key_id} is not in the trust policy {settings.trust_policy}")
    return root, policy


def _witnessed(policy: TrustPolicy, settings: ServiceSettings, say: Callable[[str], None]) -> list[bytes]:
    """The latest checkpoint of this chain each policy witness cosigned (what the store must still hold)."""
    notes = []
    for entry in policy.witnesses:
        if not entry.url:
            continue
        try:
            note = WitnessClient(entry.url, entry.name, entry.vkey, settings.witness_timeout_s).fetch_latest(
                default_origin(settings.chain_id)
            )
        except WitnessClientError as exc:
            say(f"warning: witness {entry.name} could not say what it last cosigned: {exc}")
            continue
        if note is not None:
            notes.append(note)
    return notes


def _signer(settings: ServiceSettings, say: Callable[[str], None]) -> tuple[Signer, KeyRing | None]:
    """File keys by default (a dev key is generated on first start); AWS KMS when configured."""
    if settings.kms_key_id:
        kms_signer = KmsEd25519Signer(settings.kms_key_id.format(chain_id=settings.chain_id))
        previous = [k.strip() for k in settings.kms_previous_key_ids.split(",") if k.strip()]
        return kms_signer, KmsKeyRing.from_key_ids(previous) if previous else None
    keys = FileKeyStore.default()
    signer, created = keys.init()
    if created:
        say(f"Generated a development signing key {signer.key_id} in {keys.directory} (mode 0600)")
    return signer, keys


def _loaded_models(models: Engine) -> list[tuple[str, str, str]]:
    """(model, version, artifact sha256) of every version loaded here (verdict_model_info)."""
    out = []
    for name, version in models.loaded_versions():
        try:
            out.append((name, version, models.manifest(name, version).artifact_sha256))
        except (ServiceError, RegistryError, StoreError):  # cached once loaded: not expected
            continue
    return out


def _readiness(
    store: WormStore,
    lane: AuditLane,
    models: Engine,
    unready_after: int,
    retry_after_s: float,
    health: FailClosedLog | None = None,
) -> Callable[[], Readiness]:
    """Ready = a model is loaded, the store answers and can take appends, and
    the chain writer has not been stopped by a permanent error. Model versions
    that failed to load are named beside the checks (:class:`Readiness`).

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

    Each check also logs the transitions it sees, once each (``health``,
    gateway.fail_closed): the replica turning unready or ready again, and a
    model version that failed to load serving again.
    """
    transitions = health if health is not None else FailClosedLog(_log)

    def check() -> Readiness:
        unready = models.unready()
        checks = {"models": "ok" if models.loaded_versions() else "no model loaded"}
        if unready and not models.loaded_versions():
            checks["models"] = f"no model loaded ({len(unready)} failed to load: see unready_models)"
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
        readiness = Readiness(checks, unready)
        _log_transitions(transitions, readiness, models)
        return readiness

    return check


def _log_transitions(health: FailClosedLog, readiness: Readiness, models: Engine) -> None:
    failing = {k: v for k, v in readiness.checks.items() if v not in ("ok", DISABLED_FOR_BENCHMARK)}
    if failing:
        health.failing(
            "readiness",
            "replica_unready",
            f"this replica is not ready: /readyz answers 503 (failing: {', '.join(failing)})",
            checks=failing,
        )
    else:
        health.recovered("readiness", "replica_ready", "this replica is ready again")
    loaded = set(models.loaded_versions())
    for key in health.failing_keys("model:"):
        _, name, version = key.split(":", 2)
        if f"{name}:{version}" in readiness.unready_models:
            continue
        state = "loaded" if (name, version) in loaded else "no longer unready (revoked, or no longer tried)"
        health.recovered(key, "model_recovered", f"model {name} version {version} {state}", model=name, version=version)


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
