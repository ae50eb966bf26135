"""Service configuration: defaults, then a TOML file, then environment variables.

Why this order: an operator ships a TOML file with the deployment and
overrides single values per pod (the chain id from the StatefulSet ordinal,
say) with environment variables. Every setting has a safe default so the
embedded set-up needs no file at all.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any

import msgspec

from verdict.audit.config import data_dir, store_url
from verdict.audit.personal_data import RetentionPolicy

__all__ = ["ServiceSettings", "SettingsError", "load_settings"]


class SettingsError(ValueError):
    """A configuration value is invalid; the message names the source and key."""


class ServiceSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 8000
    grpc_port: int = 0  # Open Inference Protocol v2 over gRPC on this port (0: no gRPC listener)
    store: str = ""  # resolved from VERDICT_STORE / VERDICT_HOME when empty
    chain_id: str = "gateway-0"  # one chain per writer process
    max_batch: int = 64  # micro-batch size bound (= the score bucket)
    max_wait_ms: float = 4.0  # how long the first request of a batch waits for company
    commit_threads: int = 2  # audit appends in flight at once (one's index round overlaps the next's segment)
    max_body_bytes: int = 65536
    request_timeout_s: float = 10.0  # a decision waiting longer answers 503
    checkpoint_every: int = 1000  # records between signed Merkle checkpoints
    checkpoint_interval_s: float = 60.0
    retry_after_s: int = 5  # Retry-After on 503
    unready_after_failures: int = 3  # consecutive failed appends before /readyz reports the store unable to append
    lease_ttl_s: float = 180.0  # this writer's lease on its chain lasts this long without renewal (audit.lease)
    lease_renew_s: float = 60.0  # and is renewed this often (one small write-once object per renewal)
    lease_skew_s: float = 15.0  # the most two writers' clocks may disagree
    bootstrap: bool = True  # train/register the reference model on an empty store
    explain: bool = True  # benchmarks only: switch explanation off (upper bound)
    audit: bool = True  # benchmarks only: switch the audit append off (upper bound)
    apikeys_file: str = ""  # default $VERDICT_HOME/apikeys.json
    kms_key_id: str = ""  # sign with this AWS KMS Ed25519 key ("{chain_id}" is replaced); default: file keys
    kms_previous_key_ids: str = ""  # comma-separated earlier KMS keys this chain may have been signed with
    trust_root: str = ""  # "" = a root key file in the data dir, made on first start; a PEM path;
    # "kms:<key id>"; "none" = no root here (certificates issued beforehand)
    trust_policy: str = ""  # trust policy file (roots, witnesses, quorum); default: the root's own
    witness_timeout_s: float = 10.0  # per witness request (in the background, never on a decision's path)
    seal: bool = True  # seal personal data in records (spec §3a); false needs VERDICT_UNSAFE_BENCHMARK=1 (benchmarks)
    keyring: str = ""  # data keyring directory; default $VERDICT_KEYRING, else <data dir>/keyring (outside the store)
    keyring_kek: str = ""  # what wraps the data keys: "" or "local" (a key file in the keyring), "kms:<key id>"
    keyring_create: bool = False  # start a new keyring although the store already holds decisions (after upgrading)
    retention: str = ""  # days kept per model, "*=1827,my-model=365" (default five years; at least 183 days)
    log_format: str = "auto"  # "json" (one object per line), "text", or "auto": text on a terminal, else JSON
    log_level: str = "info"  # debug, info (access lines), warning, error, critical
    otlp_endpoint: str = ""  # OTLP/HTTP collector base URL (http://collector:4318) for traces; "" = tracing off
    console_idle_s: float = 900.0  # a console session unused this long ends (15 minutes)
    console_max_age_s: float = 28800.0  # and every console session ends this long after sign-in (8 hours)


_ENV_PREFIX = "VERDICT_"
_CHAIN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def _ordinal_chain_id() -> str | None:
    """In a StatefulSet the pod name ends in its ordinal: gateway-3 writes chain gateway-3."""
    pod = os.environ.get("POD_NAME") or os.environ.get("HOSTNAME", "")
    return pod if re.fullmatch(r".+-\d+", pod) else None


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> ServiceSettings:
    values: dict[str, Any] = {}
    path = config_file or os.environ.get("VERDICT_CONFIG")
    if path:
        try:
            values.update(tomllib.loads(Path(path).read_text()).get("gateway", {}))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(f"config file {path}: {exc}") from None
    if os.environ.get("VERDICT_CHAIN_ID") is None and "chain_id" not in values and (ordinal := _ordinal_chain_id()):
        values["chain_id"] = ordinal
    for field in msgspec.structs.fields(ServiceSettings):
        env = os.environ.get(_ENV_PREFIX + field.name.upper())
        if env is not None and field.name != "store":
            values[field.name] = env
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        settings = msgspec.convert(values, ServiceSettings, strict=False)
    except msgspec.ValidationError as exc:
        raise SettingsError(f"invalid gateway setting: {exc}") from None
    if not _CHAIN_ID.fullmatch(settings.chain_id):
        raise SettingsError(f"chain_id {settings.chain_id!r} must match {_CHAIN_ID.pattern}")
    if not 1 <= settings.max_batch <= 4096:
        raise SettingsError("max_batch must be 1..4096")
    if not 0 <= settings.grpc_port <= 65535 or (settings.grpc_port and settings.grpc_port == settings.port):
        raise SettingsError("grpc_port must be 0 (off) or a port 1..65535 other than port")
    if not 1 <= settings.commit_threads <= 8:
        raise SettingsError("commit_threads must be 1..8")
    try:
        RetentionPolicy.parse(settings.retention)
    except ValueError as exc:
        raise SettingsError(f"retention: {exc}") from None
    if not 0 < settings.console_idle_s <= settings.console_max_age_s:
        raise SettingsError("console sessions need 0 < console_idle_s <= console_max_age_s")
    if settings.unready_after_failures < 1:
        raise SettingsError("unready_after_failures must be >= 1")
    if not (settings.lease_skew_s >= 0 and 0 < settings.lease_renew_s < settings.lease_ttl_s - settings.lease_skew_s):
        raise SettingsError("lease settings need 0 <= lease_skew_s and 0 < lease_renew_s < lease_ttl_s - lease_skew_s")
    return msgspec.structs.replace(
        settings,
        store=store_url(settings.store or None),
        apikeys_file=settings.apikeys_file or str(data_dir() / "apikeys.json"),
    )
