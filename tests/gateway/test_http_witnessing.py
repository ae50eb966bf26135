"""A real gateway, a real witness process, a real store: checkpoints get cosigned
in the background, and a truncated store is refused at restart and by the verifier
(issue 15, items 2 and 4)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.gateway.conftest import auth
from tests.support.gateway_server import GatewayServer, prepare_home
from tests.support.witness_process import WitnessProcess
from verdict.audit import layout
from verdict.audit.signing import FileKeyStore
from verdict.audit.stores import open_store
from verdict.audit.trust import RootKey
from verdict.audit.verifier import verify_store
from verdict.gateway.datasets import load_dataset

POLLS = 240  # bounded polls of the store (0.25 s apart), never a deadline


def _decide(server: GatewayServer, token: str, ids: list[str]) -> list[dict]:
    rows = load_dataset("german-credit").rows
    out = []
    with httpx.Client(base_url=server.url, headers=auth(token), timeout=30) as client:
        for n, request_id in enumerate(ids):
            made = client.post(
                "/v1/decisions",
                json={"model": "german-credit", "request_id": request_id, "attributes": rows[n % len(rows)]},
            )
            assert made.status_code == 200, made.text
            out.append(made.json())
    return out


def _remove(path: Path) -> None:
    path.parent.chmod(0o755)
    path.unlink()


def test_witnessed_gateway_refuses_a_truncated_store(tmp_path, trained_dirs):
    home = tmp_path / "home"
    tokens = prepare_home(home, trained_dirs["german-credit"])
    signer, _ = FileKeyStore(home / "keys").init()  # `verdict keys init`: the witness must know the log's key
    root, _ = RootKey.load_or_create(home / "trust" / "root.pem")
    witness = WitnessProcess(
        tmp_path / "witness", "witness-test", {"verdict/gateway-0": [signer.public_key_document.vkey]}
    ).start()
    policy = root.policy().with_witnesses([witness.entry()], 1)
    (home / "policy.json").write_bytes(policy.encode())
    env = {"VERDICT_CHECKPOINT_INTERVAL_S": "0.5", "VERDICT_TRUST_POLICY": str(home / "policy.json")}
    store = open_store((home / "store").as_uri())
    try:
        with GatewayServer(home, env=env).start() as server:
            receipts = [d["receipt"] for d in _decide(server, tokens["client"], [f"w-{i}" for i in range(6)])]
            head = receipts[-1]["seq"] + 1
            cosigned = []
            for _ in range(POLLS):  # the idle timer checkpoints; the background thread gets it cosigned
                cosigned = [layout.number_from_key(k) for k in store.list_keys(layout.cosigned_prefix("gateway-0"))]
                if cosigned and max(cosigned) >= head:
                    break
                time.sleep(0.25)
            assert cosigned and max(cosigned) >= head, server.log()
        report = verify_store(store, trust=policy, ask_witnesses=True)
        assert report.ok, report.failures
        assert report.anchored and report.witnessed["gateway-0"] >= head

        # A store writer (no key) cuts the tail: segments, checkpoints, cosigned notes, index entries.
        cut = receipts[2]["seq"]
        for prefix in (
            layout.segments_prefix("gateway-0"),
            layout.checkpoints_prefix("gateway-0"),
            layout.cosigned_prefix("gateway-0"),
        ):
            for key in list(store.list_keys(prefix)):
                if layout.number_from_key(key) > cut:
                    _remove(store.root / key)
        for receipt_id in (f"w-{i}" for i in range(2, 6)):
            _remove(store.root / layout.index_key(receipt_id))

        report = verify_store(store, trust=policy, ask_witnesses=True)
        assert "below_witnessed_size" in {f.reason for f in report.failures}
        from verdict.audit.completeness import HeldReceipt

        held = [
            (r["request_id"], HeldReceipt(**r["receipt"]))
            for r in [{"request_id": f"w-{i}", "receipt": receipts[i]} for i in range(6)]
        ]
        report = verify_store(store, trust=policy, receipts=held)
        assert {f.reason for f in report.failures} >= {"receipt_missing"}

        # The gateway's own held checkpoint (data dir) refuses the chain at restart ...
        refused = GatewayServer(home, env=env)
        with pytest.raises(RuntimeError, match=r"below_held_checkpoint|refused"):
            refused.start()
        # ... and so does the witness's, with the gateway's data directory lost.
        for held_file in (home / "trust" / "held").iterdir():
            held_file.unlink()
        with pytest.raises(RuntimeError, match=r"below_held_checkpoint|refused"):
            GatewayServer(home, env=env).start()
    finally:
        witness.stop()
