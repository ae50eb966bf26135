"""An access record says what was delivered: a lookup that fails leaves none.

Built in process from the real services (real store, real chain, real model);
the HTTP layer only translates what these return or raise.
"""

from __future__ import annotations

import pytest

from tests.gateway.test_http_decisions import chain_records
from tests.support.gateway_server import prepare_home
from verdict.audit.records import AccessBody
from verdict.audit.stores import open_store
from verdict.gateway.api_models import DecisionRequest, DecisionResponse
from verdict.gateway.datasets import load_dataset
from verdict.gateway.service import build_services
from verdict.gateway.service_errors import NotExplained
from verdict.gateway.settings import load_settings


def test_a_chart_that_cannot_be_drawn_leaves_no_access_record(tmp_path, monkeypatch, trained_dirs):
    home = tmp_path / "home"
    monkeypatch.setenv("VERDICT_HOME", str(home))
    store_url = (home / "store").as_uri()
    prepare_home(home, trained_dirs["german-credit"], store_url=store_url)
    # explain=False (the benchmarks' upper bound) records decisions without contributions: nothing to chart
    services = build_services(load_settings(store=store_url, bootstrap=False, explain=False), say=lambda _: None)
    try:
        pending = services.decisions.prepare(
            DecisionRequest(
                model="german-credit", request_id="unexplained-1", attributes=load_dataset("german-credit").rows[0]
            )
        )
        (answer,) = services.decisions.decide_batch([pending])
        assert isinstance(answer, DecisionResponse)
        with pytest.raises(NotExplained) as refused:
            services.lookups.explanation_chart("unexplained-1", "apikey-staff")
        record = services.lookups.record("unexplained-1", "apikey-staff")
    finally:
        services.lane.writer.close()
    assert (refused.value.request_id, refused.value.method) == ("unexplained-1", "none")
    assert record.record.body.request_id == "unexplained-1"
    accesses = [
        (r.body.action, r.body.target_request_id)
        for r in chain_records(open_store(store_url), "gateway-0")
        if isinstance(r.body, AccessBody)
    ]
    assert accesses == [("lookup", "unexplained-1")]
