"""Bring-your-own-model packaging (issue 17): a user's nn.Module and data -> a model
directory that registers, and every kind of bad package refused with a message
that names the key, column, factory or rule.

Real things only: the claims-triage example's own scripts, real torch exports,
real CSV / Parquet files, a real filesystem store, the real CLI in a subprocess.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import re
import zipfile
from pathlib import Path

import msgspec
import numpy as np
import pandas as pd
import pytest
import torch

import verdict
from tests.gateway.conftest import run_verdict
from tests.support.byo_models import (
    SCORE_FACTORY,
    TINY_FACTORY,
    package_claims_example,
    tiny_frame,
    tiny_package,
)
from verdict.audit.stores import FilesystemStore
from verdict.gateway import explanation
from verdict.gateway.manifest import decode_manifest, encode_manifest
from verdict.gateway.model_files import (
    ARTIFACT_FILE,
    BACKGROUND_FILE,
    HELDOUT_FILE,
    MANIFEST_FILE,
    VALIDATION_FILE,
    VALIDATION_HTML,
    HeldOut,
)
from verdict.gateway.packaging.errors import DataError, ModelError, PackagingError, SpecError
from verdict.gateway.packaging.export import load_factory
from verdict.gateway.packaging.package import package_spec_file
from verdict.gateway.registry import Registry
from verdict.gateway.runtime import LoadedModel
from verdict.gateway.schema import encode_rows, validate_batch
from verdict.gateway.validation import decode_report
from verdict.preprocessing import TabularEncoder, encode_frame, infer_schema

FILES = (MANIFEST_FILE, ARTIFACT_FILE, BACKGROUND_FILE, HELDOUT_FILE)


@pytest.fixture(scope="module")
def claims(tmp_path_factory):
    """The claims-triage example, end to end: data, training, packaging, validation."""
    work = tmp_path_factory.mktemp("claims")
    return package_claims_example(work)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A tiny probability model packaged from a factory with no weights file."""
    work = tmp_path_factory.mktemp("tiny")
    return package_spec_file(tiny_package(work), work / "out", validate=False).directory


def _refused(spec: Path, error: type[PackagingError], *needles: str) -> str:
    out = spec.parent / "out"
    with pytest.raises(error) as caught:
        package_spec_file(spec, out, validate=False)
    message = str(caught.value)
    for needle in needles:
        assert needle in message, message
    assert not out.exists(), "a refused package must leave nothing at --out"
    assert not [p for p in spec.parent.iterdir() if p.name.startswith(".out.")], "staging folder left behind"
    return message


# --- the example, packaged ----------------------------------------------------------------------


def test_the_claims_example_packages_into_a_registrable_directory(claims, tmp_path):
    directory, m = claims.directory, claims.manifest
    assert sorted(p.name for p in directory.iterdir()) == sorted((*FILES, VALIDATION_FILE, VALIDATION_HTML))
    assert claims.report is not None and claims.report.passed
    assert decode_report((directory / VALIDATION_FILE).read_bytes()).passed
    assert {c.name: c.status for c in claims.report.checks}["export_vs_eager"] == "passed"
    assert m.name == "claims-triage" and m.output.space == "probability" and m.decision.at_or_above == "refer"
    assert [s.name for s in m.inputs] == [
        "claim_amount",
        "claim_type",
        "region",
        "policy_tenure_years",
        "vehicle_age_years",
        "prior_claims",
        "days_to_report",
        "police_report",
        "witness_present",
        "night_incident",
    ]
    assert [(w.name, w.protected) for w in m.withheld] == [("age", True)]
    assert "age" not in [s.name for s in m.inputs] and "claim_id" not in [s.name for s in m.inputs]
    assert m.card is not None and m.card.risk_tier == "tier 2" and "GDPR Art. 22" in m.card.regulations
    t = m.training
    assert t.target == "fraud" and t.packaged_by == f"verdict models package {verdict.__version__}"
    data = (directory.parent / "claims.csv").read_bytes()
    assert t.dataset.sha256 == hashlib.sha256(data).hexdigest() and t.dataset.rows == 4000
    model_py = hashlib.sha256((directory.parent / "model.py").read_bytes()).hexdigest()
    assert t.source_files == {"model.py": model_py}
    assert t.code_commit == "uncommitted"  # a temporary folder is no git work tree
    assert "claim_id" in t.split and t.seed == 20261130 and t.hyperparameters["hidden"] == [32, 16]
    assert {"auc_heldout", "log_loss_heldout", "heldout_rows", "training_rows"} <= set(t.metrics)
    assert t.metrics["auc_heldout"] > 0.6
    assert t.metrics["heldout_rows"] + t.metrics["training_rows"] == 4000
    assert m.explainer.background_rows == 24 and m.explainer.algorithm == "certified"
    assert m.explainer.certification == explanation.DEFAULT_CERTIFICATION
    exact_check = next(c for c in claims.report.checks if c.name == "sampled_vs_exact")
    assert exact_check.status == "passed" and exact_check.measured["certified_but_different"] == 0
    assert (m.tolerance.absolute, m.tolerance.relative) == (1e-6, 1e-5)
    # the manifest round-trips, byte for byte
    raw = (directory / MANIFEST_FILE).read_bytes()
    assert encode_manifest(decode_manifest(raw)) == raw and decode_manifest(raw) == m
    registry = Registry(FilesystemStore(tmp_path / "store"))
    registered, new = registry.register(directory)
    assert new and registered.ref == "claims-triage:1.0.0"
    assert registry.register(directory)[1] is False


def test_heldout_rows_are_valid_and_the_export_matches_eager(claims):
    directory, m = claims.directory, claims.manifest
    heldout = msgspec.json.decode((directory / HELDOUT_FILE).read_bytes(), type=HeldOut)
    assert len(heldout.rows) == len(heldout.targets) == len(heldout.eager_outputs or []) == 256
    validate_batch(m.inputs, heldout.rows, max_rows=1024)
    assert set(heldout.targets) <= {0.0, 1.0}
    runtime = LoadedModel.load(m, (directory / ARTIFACT_FILE).read_bytes(), "cpu")
    scores, _ = runtime.score_matrix(encode_rows(m.inputs, heldout.rows))
    assert np.abs(scores - np.array(heldout.eager_outputs, dtype=np.float32)).max() <= 1e-6
    assert ((scores >= 0) & (scores <= 1)).all()


def test_schema_inference_matches_the_data(claims):
    frame = pd.read_csv(claims.directory.parent / "claims.csv")
    m = claims.manifest
    overrides = {"age": {"use": False, "reason": "protected"}}
    inferred = {s.name: s for s in infer_schema(frame, target="fraud", exclude=["claim_id"], overrides=overrides)}
    assert list(inferred) == [s.name for s in m.inputs]
    assert inferred["claim_type"].categories == tuple(sorted(frame["claim_type"].unique()))
    assert inferred["region"].kind == "category" and inferred["police_report"].categories == ("no", "yes")
    assert inferred["prior_claims"].kind == "integer"
    assert (inferred["prior_claims"].minimum, inferred["prior_claims"].maximum) == (
        int(frame["prior_claims"].min()),
        int(frame["prior_claims"].max()),
    )
    assert inferred["claim_amount"].kind == "number" and inferred["claim_amount"].maximum == frame["claim_amount"].max()
    assert inferred["days_to_report"].label == "Days to report"
    # the spec's overrides win over the inference: wider ranges, labels, units
    spec_amount = m.attribute("claim_amount")
    assert (spec_amount.minimum, spec_amount.maximum, spec_amount.unit) == (0, 250000, "EUR")
    # encode_frame is the runtime's encoding of the rows a client would send
    rows = frame.head(50)[[s.name for s in m.inputs]].to_dict("records")
    clean = [{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()} for row in rows]
    assert np.array_equal(
        encode_frame(frame.head(50), m.inputs), encode_rows(m.inputs, validate_batch(m.inputs, clean, 64))
    )


def test_packaging_twice_gives_identical_bytes(claims):
    again = package_spec_file(claims.directory.parent / "spec.toml", claims.directory.parent / "again", validate=False)
    for name in FILES:
        assert (again.directory / name).read_bytes() == (claims.directory / name).read_bytes(), name


def test_a_pre_exported_artifact_packages_as_it_is(claims, tmp_path):
    frame = pd.read_csv(claims.directory.parent / "claims.csv")
    (tmp_path / "model.pt2").write_bytes((claims.directory / ARTIFACT_FILE).read_bytes())
    spec = tiny_package(
        tmp_path,
        frame=frame,
        factory=None,
        spec={
            "name": "claims-exported",
            "model": {"artifact": "model.pt2"},
            "data": {"path": "data.csv", "target": "fraud", "id": "claim_id"},
            "attributes": {"age": {"use": False, "reason": "protected characteristic"}},
            "decision": {"threshold": 0.3, "at_or_above": "refer", "below": "fast-track"},
            "explainer": {"background_rows": 24},
        },
    )
    packaged = package_spec_file(spec, tmp_path / "out", validate=False)
    assert (packaged.directory / ARTIFACT_FILE).read_bytes() == (tmp_path / "model.pt2").read_bytes()
    heldout = msgspec.json.decode((packaged.directory / HELDOUT_FILE).read_bytes(), type=HeldOut)
    assert heldout.eager_outputs is None  # no eager module to compare with
    assert packaged.manifest.training.source_files == {}
    assert packaged.manifest.training.metrics["auc_heldout"] == claims.manifest.training.metrics["auc_heldout"]


# --- other models -------------------------------------------------------------------------------


def test_a_score_model_packages_with_a_default_decision_and_registers(tmp_path):
    spec = tiny_package(
        tmp_path,
        factory=SCORE_FACTORY,
        data_name="data.parquet",
        spec={
            "data": {"path": "data.parquet", "target": "cost", "exclude": ["bad"]},
            "output": {"kind": "score", "name": "expected_cost"},
            "decision": None,
            "attributes": {"income": {"label": "Net income", "unit": "EUR", "minimum": 0, "maximum": 1000000}},
        },
    )
    packaged = package_spec_file(spec, tmp_path / "out", validate=False)
    m = packaged.manifest
    assert m.output.space == m.explainer.output_space == "score" and m.output.name == "expected_cost"
    costs = tiny_frame()["cost"]
    assert m.decision.at_or_above == "high" and "median" in m.decision.rationale
    assert costs.min() < m.decision.threshold < costs.max()
    assert {"mae_heldout", "rmse_heldout"} <= set(m.training.metrics) and "auc_heldout" not in m.training.metrics
    assert "raised the predicted cost" in m.explainer.reason_templates["increased_risk"]
    assert m.attribute("income").label == "Net income" and m.attribute("housing").categories == (
        "family",
        "own",
        "rent",
    )
    assert m.training.dataset.name == "data"
    assert Registry(FilesystemStore(tmp_path / "store")).register(packaged.directory)[1]


def test_a_separate_heldout_file_and_a_labelled_target(tmp_path):
    frame = tiny_frame().assign(outcome=lambda f: np.where(f["bad"] == 1, "defaulted", "repaid")).drop(columns="bad")
    train, held = frame.iloc[:180], frame.iloc[180:].assign(income=lambda f: f["income"] * 3)
    held.to_csv(tmp_path / "held.csv", index=False)
    spec = tiny_package(
        tmp_path,
        frame=train,
        spec={
            "data": {
                "path": "data.csv",
                "target": "outcome",
                "positive": "defaulted",
                "heldout": "held.csv",
                "exclude": ["cost"],
            }
        },
    )
    m = package_spec_file(spec, tmp_path / "out", validate=False).manifest
    assert "held.csv" in m.training.split and m.training.metrics["heldout_rows"] == 60
    assert m.training.metrics["training_rows"] == 180 and m.training.dataset.rows == 180
    assert m.attribute("income").maximum == held["income"].max()  # held-out rows are rows a client may send
    assert m.output.description == "Probability that outcome = 'defaulted' (the adverse outcome)"
    heldout = msgspec.json.decode((tmp_path / "out" / HELDOUT_FILE).read_bytes(), type=HeldOut)
    assert heldout.targets == [float(v == "defaulted") for v in held["outcome"]]


def test_explicit_inputs_choose_and_order_the_schema(tmp_path):
    spec = tiny_package(tmp_path, spec={"data": {"path": "data.csv", "target": "bad", "inputs": ["housing", "income"]}})
    m = package_spec_file(spec, tmp_path / "out", validate=False).manifest
    assert [s.name for s in m.inputs] == ["housing", "income"]
    assert m.explainer.top_reasons == 2  # never more principal reasons than attributes
    assert m.explainer.algorithm == "exact"  # two attributes: every coalition fits the budget


def test_empty_or_unreadable_data_is_refused(tmp_path):
    spec = tiny_package(tmp_path, frame=tiny_frame().iloc[:0])
    _refused(spec, DataError, "data.csv: the data has no rows")
    spec = tiny_package(tmp_path, spec={"data": {"path": "data.xlsx", "target": "bad"}})
    _refused(spec, DataError, "data must be CSV (.csv) or Parquet (.parquet, .pq)")


def test_the_python_api_packages_a_module_and_a_dataframe(tmp_path):
    frame = tiny_frame()
    specs = infer_schema(frame, target="bad", exclude=["cost"])

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = TabularEncoder.fit(specs, encode_frame(frame, specs))
            self.linear = torch.nn.Linear(self.encoder.width, 1)

        def forward(self, x):
            return torch.sigmoid(self.linear(self.encoder(x)).squeeze(-1))

    torch.manual_seed(1)
    out = verdict.package(
        Model(),
        frame,
        out=tmp_path / "api",
        name="api-model",
        target="bad",
        decision={"threshold": 0.4, "at_or_above": "decline", "below": "approve"},
        attributes={"channel": {"label": "Sales channel"}},
        card={"purpose": "p", "owner": "o", "intended_use": "i", "limitations": "l", "risk_tier": "low"},
        settings={"data": {"exclude": ["cost"]}, "explainer": {"background_rows": 8}},
        validate=False,
    )
    m = decode_manifest((out / MANIFEST_FILE).read_bytes())
    assert out == tmp_path / "api" and m.name == "api-model" and m.attribute("channel").label == "Sales channel"
    assert m.training.dataset.name == "dataframe"
    assert (
        m.training.dataset.sha256 == hashlib.sha256(frame.to_csv(index=False, lineterminator="\n").encode()).hexdigest()
    )
    # the module's class is defined in this file: it is the model's source
    this_file = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()
    assert m.training.source_files == {"tests/gateway/test_packaging.py": this_file}
    assert m.card is not None and m.card.risk_tier == "low"
    with pytest.raises(verdict.VerdictError, match="needs name= and target="):
        verdict.package(Model(), frame, out=tmp_path / "x")
    with pytest.raises(verdict.VerdictError, match=r'unknown key "explainer.rows"'):
        verdict.package(Model(), frame, out=tmp_path / "x", name="m", target="bad", settings={"explainer": {"rows": 3}})
    with pytest.raises(verdict.VerdictError, match="exists and is not empty"):
        verdict.package(
            Model(),
            frame,
            out=out,
            name="api-model",
            target="bad",
            decision={"threshold": 0.4, "at_or_above": "a", "below": "b"},
        )


def test_the_python_api_packages_a_spec_file(tmp_path):
    spec = tiny_package(tmp_path / "pkg")
    out = verdict.package(spec, out=tmp_path / "from-spec", validate=False)
    assert (out / MANIFEST_FILE).is_file()
    with pytest.raises(verdict.VerdictError, match="drop target"):
        verdict.package(spec, out=tmp_path / "y", target="bad")


def test_out_is_replaced_only_with_force(tiny_dir):
    spec = tiny_dir.parent / "spec.toml"
    before = {p.name: p.read_bytes() for p in tiny_dir.iterdir()}
    (tiny_dir / "stale.txt").write_text("old")
    with pytest.raises(PackagingError, match="exists and is not empty"):
        package_spec_file(spec, tiny_dir, validate=False)
    package_spec_file(spec, tiny_dir, validate=False, force=True)
    assert {p.name: p.read_bytes() for p in tiny_dir.iterdir()} == before
    with pytest.raises(PackagingError, match="holds the spec"):
        package_spec_file(spec, tiny_dir.parent, validate=False, force=True)


# --- bad packages -------------------------------------------------------------------------------


def test_a_file_that_is_not_an_export_is_refused(tmp_path):
    (tmp_path / "model.pt2").write_bytes(b"\x00not a program" * 100)
    spec = tiny_package(tmp_path, factory=None, spec={"model": {"artifact": "model.pt2"}})
    _refused(
        spec, ModelError, "model.artifact model.pt2: not a zip archive", "not a torch.export program", "[artifact.zip]"
    )
    buffer = io.BytesIO()
    torch.save(torch.nn.Linear(3, 1).state_dict(), buffer)
    (tmp_path / "model.pt2").write_bytes(buffer.getvalue())
    _refused(spec, ModelError, "a pickled state_dict, not an exported program", "[artifact.state_dict]")


class _Linear(torch.nn.Module):
    """Five encoded inputs (the tiny data's) -> a probability per row."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(5, 1)

    def forward(self, x):
        return torch.sigmoid(self.linear(x).squeeze(-1))


def _saved(program: torch.export.ExportedProgram) -> bytes:
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


def test_a_static_batch_artifact_is_refused_by_the_graph_checks_before_it_runs(tmp_path):
    """Exported from one row without dynamic_shapes: named by the validator's graph_input rule and fix,
    not by the guard torch trips over when the program is run at 64 rows."""
    static = torch.export.export(_Linear().eval(), (torch.ones(1, 5),))
    (tmp_path / "model.pt2").write_bytes(_saved(static))
    spec = tiny_package(tmp_path, factory=None, spec={"model": {"artifact": "model.pt2"}})
    message = _refused(
        spec,
        ModelError,
        "model.artifact model.pt2 breaks the model contract: graph_input: the batch dimension is static (1 row)",
        "export with a dynamic batch dimension (torch.export.Dim",
        "[graph.input.dynamic_batch]",
    )
    assert "Guard failed" not in message and "encoded rows" not in message


def _planted_archive(program_bytes: bytes, marker: Path) -> bytes:
    """A real .pt2 whose constants config says one constant is a pickle; the pickle, when
    loaded, creates ``marker`` (torch.export.load would ``pickle.loads`` it)."""
    source = zipfile.ZipFile(io.BytesIO(program_bytes))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename.endswith("model_constants_config.json"):
                meta = {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": True, "tensor_meta": None}
                data = json.dumps({"config": {"planted": meta}}).encode()
                root = info.filename.split("/", 1)[0]
            target.writestr(info, data)
        target.writestr(f"{root}/data/constants/opaque_obj_0", pickle.dumps(_Planted(marker)))
    return out.getvalue()


class _Planted:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_an_artifact_is_screened_by_the_validator_before_torch_loads_it(tmp_path):
    batch = torch.export.Dim("batch", min=1, max=65536)
    program = torch.export.export(_Linear().eval(), (torch.ones(4, 5),), dynamic_shapes=({0: batch},))
    marker = tmp_path / "unpickled"
    (tmp_path / "model.pt2").write_bytes(_planted_archive(_saved(program), marker))
    spec = tiny_package(tmp_path, factory=None, spec={"model": {"artifact": "model.pt2"}})
    _refused(spec, ModelError, "model.artifact model.pt2: constant 'planted'", "refused unopened")
    assert not marker.exists(), "the packager unpickled the user's file"
    buffer = io.BytesIO()
    torch.save(_Planted(marker), buffer)  # a whole pickle named .pt2
    (tmp_path / "model.pt2").write_bytes(buffer.getvalue())
    _refused(spec, ModelError, "refused unopened, a pickle can run code", "[artifact.pickle]")
    assert not marker.exists()


def test_a_factory_that_raises_is_named(tmp_path):
    factory = "def build():\n    raise RuntimeError('no GPU here')\n"
    _refused(
        tiny_package(tmp_path, factory=factory), ModelError, "factory model:build raised RuntimeError: no GPU here"
    )


def test_a_factory_that_needs_more_than_its_inputs_is_named(tmp_path):
    factory = TINY_FACTORY.replace("def build(inputs):", "def build(inputs, hidden):")
    message = _refused(
        tiny_package(tmp_path, factory=factory),
        ModelError,
        "factory model:build must take no arguments or one named 'inputs' (the attribute specs), it takes inputs, hidden",
        "give hidden a default, or set it inside the factory",
    )
    assert "TypeError" not in message


def test_a_missing_factory_function_and_mismatched_weights_are_named(tmp_path):
    spec = tiny_package(tmp_path, spec={"model": {"factory": "model:make"}})
    _refused(spec, ModelError, "factory model:make: module model has no function 'make'")
    torch.save({"linear.weight": torch.zeros(1, 2)}, tmp_path / "weights.pt")
    spec = tiny_package(tmp_path, spec={"model": {"factory": "model:build", "weights": "weights.pt"}})
    message = _refused(spec, ModelError, "model.weights weights.pt does not fit the module built by model:build")
    assert "linear.weight is [1, 2] in the file, [1, 8] in the module" in message
    assert "; the file lacks encoder.asinh.selected, " in message.splitlines()[0]


def test_weights_trained_on_other_inputs_are_summed_up_in_one_line_first(tmp_path):
    spec = tiny_package(tmp_path, spec={"model": {"factory": "model:build", "weights": "weights.pt"}})
    inputs = infer_schema(tiny_frame(), target="bad", exclude=["cost"])
    state = load_factory("model:build", tmp_path, inputs).module.state_dict()
    state["linear.weight"] = torch.zeros(1, 9)  # one encoded column more than the module builds
    torch.save(state, tmp_path / "weights.pt")
    message = _refused(spec, ModelError)
    first, *details = message.splitlines()
    assert first == (
        "model.weights weights.pt does not fit the module built by model:build for 5 inputs: linear.weight is "
        "[1, 9] in the file, [1, 8] in the module; were the weights trained on other inputs?"
    )
    assert details and "size mismatch for linear.weight" in "\n".join(details)  # torch's own list, after


@pytest.mark.parametrize(
    ("ending", "needle"),
    [
        (".unsqueeze(-1)", "return shape [B], got [B, 1]: squeeze the last dimension"),
        (".double()", "returns float64, not float32"),
    ],
)
def test_a_wrong_output_shape_or_dtype_is_refused(tmp_path, ending, needle):
    line = "return torch.sigmoid(self.linear(self.encoder(x)).squeeze(-1))"
    factory = TINY_FACTORY.replace(line, line + ending)
    assert factory != TINY_FACTORY
    _refused(tiny_package(tmp_path, factory=factory), ModelError, needle)


def test_data_dependent_control_flow_is_refused_naming_the_rule(tmp_path):
    factory = TINY_FACTORY.replace(
        "        return torch.sigmoid(",
        "        if x.sum() > 0:\n            return torch.zeros(x.shape[0])\n        return torch.sigmoid(",
    )
    message = _refused(
        tiny_package(tmp_path, factory=factory), ModelError, "rule: no Python control flow on tensor values"
    )
    assert "cannot export the model with torch.export" in message


def test_torch_says_nothing_before_the_one_error_line(tmp_path):
    """torch prints a symbolic-shapes warning and the partial graph (twice) when export fails, and
    logs a traceback when torch.export.load does: none of it reaches the user's terminal."""
    factory = TINY_FACTORY.replace(
        "        return torch.sigmoid(",
        "        if x[:, 0].max() > 100000:\n            return torch.zeros(x.shape[0])\n        return torch.sigmoid(",
    )
    control_flow = tiny_package(tmp_path / "control-flow", factory=factory)
    buffer = io.BytesIO()
    torch.save(torch.nn.Linear(5, 1).state_dict(), buffer)
    state_dict = tiny_package(tmp_path / "state-dict", factory=None, spec={"model": {"artifact": "model.pt2"}})
    (state_dict.parent / "model.pt2").write_bytes(buffer.getvalue())
    expected = {
        control_flow: "error: cannot export the model with torch.export (rule: no Python control flow",
        state_dict: "error: model.artifact model.pt2: a pickled state_dict, not an exported program",
    }
    for spec, error in expected.items():
        done = run_verdict("models", "package", str(spec), "--out", str(spec.parent / "out"), "--no-validate")
        assert done.returncode == 1, done.stderr
        lines = done.stderr.splitlines()
        assert lines[0].startswith(error), done.stderr
        assert lines[1:] == [f"nothing was written to {spec.parent / 'out'}"], done.stderr
        for noise in ("Traceback", "symbolic_shapes", "def forward", "torch/export"):
            assert noise not in done.stderr, done.stderr


def test_a_fixed_batch_size_is_refused_naming_the_rule(tmp_path):
    factory = TINY_FACTORY.replace("self.encoder(x))", "self.encoder(x).reshape(64, -1))")
    _refused(tiny_package(tmp_path, factory=factory), ModelError, "rule: the batch dimension must stay dynamic")


def test_attributes_in_the_spec_must_be_in_the_data(tmp_path):
    spec = tiny_package(tmp_path, spec={"attributes": {"incme": {"label": "Income"}}})
    _refused(spec, DataError, 'attributes.incme: no column "incme" in the data')
    spec = tiny_package(tmp_path, spec={"data": {"path": "data.csv", "target": "defaulted"}})
    _refused(spec, DataError, 'target column "defaulted" is not in the data')
    spec = tiny_package(tmp_path, spec={"attributes": {"cost": {"label": "Cost"}}})  # cost is excluded
    _refused(spec, DataError, "attributes.cost: not a model input")


def test_a_constant_target_or_a_single_class_is_refused(tmp_path):
    frame = tiny_frame().assign(cost=100.0)
    spec = tiny_package(
        tmp_path,
        frame=frame,
        factory=SCORE_FACTORY,
        spec={"data": {"path": "data.csv", "target": "cost", "exclude": ["bad"]}, "output": {"kind": "score"}},
    )
    _refused(spec, DataError, 'target "cost" is constant (every row is 100.0)')
    spec = tiny_package(tmp_path, frame=tiny_frame().assign(bad=0))
    _refused(spec, DataError, 'target "bad" has a single class (every row is 0)')
    spec = tiny_package(tmp_path, frame=tiny_frame().assign(bad=lambda f: f["dependants"]))
    _refused(spec, DataError, 'target "bad" must be 0/1 for a probability model', "data.positive")


def test_nan_and_infinity_in_the_data_are_refused_naming_the_column_and_rows(tmp_path):
    frame = tiny_frame()
    frame.loc[[3, 17], "income"] = np.nan
    frame.loc[5, "debt_ratio"] = np.inf
    frame.loc[9, "housing"] = None
    message = _refused(
        tiny_package(tmp_path, frame=frame),
        DataError,
        'column "income": 2 rows have no value (NaN or empty): rows 3, 17',
        'column "housing": 1 row has no value',
    )
    assert 'column "debt_ratio": 1 row is infinite: row 5' in message
    frame = tiny_frame()
    frame.loc[11, "bad"] = np.nan
    _refused(tiny_package(tmp_path, frame=frame), DataError, 'column "bad": 1 row has no value')


def test_unknown_keys_in_the_spec_are_refused_by_name(tmp_path):
    spec = tiny_package(tmp_path, spec={"model": {"factory": "model:build", "wieghts": "w.pt"}})
    _refused(spec, SpecError, 'spec.toml: unknown key "model.wieghts"')
    spec = tiny_package(tmp_path, spec={"attributes": {"income": {"lable": "Income"}}})
    _refused(spec, SpecError, 'spec.toml: unknown key "attributes.income.lable"')
    spec = tiny_package(tmp_path, spec={"colour": "blue"})
    _refused(spec, SpecError, 'spec.toml: unknown key "colour"')
    spec = tiny_package(tmp_path, spec={"decision": {"threshold": "high", "at_or_above": "a", "below": "b"}})
    _refused(spec, SpecError, "spec.toml: decision.threshold: expected float, got str")
    spec = tiny_package(tmp_path, spec={"decision": {"threshold": 7.5, "at_or_above": "a", "below": "b"}})
    _refused(spec, SpecError, "decision.threshold 7.5 must be in (0, 1]")
    spec = tiny_package(tmp_path, spec={"attributes": {"channel": {"use": False}}})
    _refused(spec, SpecError, "attributes.channel: use = false needs a reason")


def test_a_bad_attribute_name_is_refused_with_a_suggestion(tmp_path):
    frame = tiny_frame().rename(columns={"debt_ratio": "Debt Ratio"})
    _refused(
        tiny_package(tmp_path, frame=frame),
        DataError,
        'column "Debt Ratio": attribute names must be lower_snake_case',
        '"debt_ratio"',
    )


def test_values_outside_a_declared_range_are_refused(tmp_path):
    spec = tiny_package(tmp_path, spec={"attributes": {"dependants": {"maximum": 2}}})
    _refused(spec, DataError, 'column "dependants"', "above the declared maximum 2")


# --- preprocessing blocks -------------------------------------------------------------------------


def test_the_tabular_encoder_standardises_scales_and_one_hot_encodes():
    frame = tiny_frame()
    specs = infer_schema(frame, target="bad", exclude=["cost"])
    x = encode_frame(frame, specs)
    encoder = TabularEncoder.fit(specs, x, scaling={"income": "asinh", "dependants": "log1p"})
    features = encoder(torch.from_numpy(x))
    assert features.shape == (len(frame), 3 + 3 + 2) and encoder.width == 8 and features.dtype == torch.float32
    numeric = features[:, :3].double()
    assert torch.allclose(numeric.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(numeric.std(0, correction=0), torch.ones(3, dtype=torch.float64), atol=1e-4)
    assert torch.equal(features[:, 3:].sum(1), torch.full((len(frame),), 2.0))  # one category each
    # the fitted values are buffers: a fresh encoder with the state_dict computes the same bits
    fresh = TabularEncoder(specs, scaling={"income": "asinh", "dependants": "log1p"})
    fresh.load_state_dict(encoder.state_dict())
    assert torch.equal(fresh(torch.from_numpy(x)), features)
    with pytest.raises(ValueError, match="only numbers are scaled"):
        TabularEncoder(specs, scaling={"housing": "asinh"})


# --- the command line ---------------------------------------------------------------------------


def test_the_cli_packages_and_refuses(tmp_path):
    income = {"minimum": 0, "maximum": 1000000, "unit": "EUR"}
    spec = tiny_package(tmp_path / "pkg", spec={"attributes": {"income": income}})
    out = tmp_path / "packaged"
    done = run_verdict("models", "package", str(spec), "--out", str(out), "--no-validate", env={"COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    assert "packaged tiny:1.0.0" in done.stdout and f"next: verdict models register {out}" in done.stdout
    assert "housing" in done.stdout and "validation: skipped" in done.stdout
    # a number attribute's whole-number bounds print as `verdict models show` prints them
    assert "0..1000000 EUR" in done.stdout and "0.0..1000000.0" not in done.stdout
    assert json.loads((out / MANIFEST_FILE).read_bytes())["name"] == "tiny"
    again = run_verdict("models", "package", str(spec), "--out", str(out), "--no-validate")
    assert again.returncode == 1 and "exists and is not empty" in again.stderr
    spec.write_text(spec.read_text().replace('factory = "model:build"', 'factory = "model:build"\nwieghts = "w.pt"'))
    bad = run_verdict("models", "package", str(spec), "--out", str(tmp_path / "other"), "--no-validate")
    assert bad.returncode == 1 and 'error: spec.toml: unknown key "model.wieghts"' in bad.stderr
    assert "Traceback" not in bad.stderr and not (tmp_path / "other").exists()


def test_a_refused_validation_is_printed_as_the_validator_prints_it(tmp_path):
    """NaN at a schema edge (income 0, below every data row): outputs FAIL, the checks that need it NOT RUN,
    in the words `verdict models validate` and `register` use, never the raw status failed-dependency."""
    line = "return torch.sigmoid(self.linear(self.encoder(x)).squeeze(-1))"
    factory = TINY_FACTORY.replace(line, line + " * (x[:, 0] / x[:, 0])")
    income = {"minimum": 0, "maximum": 1000000}
    spec = tiny_package(tmp_path / "pkg", factory=factory, spec={"attributes": {"income": income}})
    done = run_verdict("models", "package", str(spec), "--out", str(tmp_path / "out"))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Validation of tiny:1.0.0: REFUSED: 1 check(s) failed" in done.stderr
    assert "1 failed, 3 not run" in done.stderr
    assert re.search(
        r"^FAIL +outputs +\d+ of \d+ outputs are not finite .* -> nan.*\[outputs\.finite\]$", done.stderr, re.M
    )
    assert re.search(r"^NOT RUN +additivity +not run: depends on outputs", done.stderr, re.M)
    assert "failed-dependency" not in done.stderr and "np.float32" not in done.stderr
    assert "error: validation refused the package: outputs: " in done.stderr and not (tmp_path / "out").exists()
