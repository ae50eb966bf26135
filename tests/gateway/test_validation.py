"""``verdict models validate``: every way a model directory was accepted before and must not be.

Real exported models (tiny ones, tests/support/model_dirs.py), the real German
reference model, the real runtime and real fresh processes; each broken
directory is refused with the op, field or rule named in the failing check.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
import zipfile
from html.parser import HTMLParser
from pathlib import Path
from typing import ClassVar

import msgspec
import pytest
import torch
from torch import nn

from tests.support.model_dirs import TINY_SPECS, TinyCredit, write_model_dir
from verdict.gateway.datasets import load_dataset
from verdict.gateway.manifest import WithheldAttribute, decode_manifest
from verdict.gateway.model_files import ARTIFACT_FILE, MANIFEST_FILE, VALIDATION_FILE, VALIDATION_HTML
from verdict.gateway.schema import AttributeSpec
from verdict.gateway.validation import (
    CHECKS,
    ValidationRefused,
    decode_report,
    encode_report,
    render_html,
    render_text,
    require_valid,
    validate_directory,
)

PROJECT = Path(__file__).resolve().parents[2]


def validate(directory: Path, **options):
    return validate_directory(directory, fresh_processes=False, **options)


def refused(report, name: str, rule: str, *fragments: str):
    """Assert ``name`` failed under ``rule`` with every fragment in its detail, and the report refuses."""
    check = report.check(name)
    assert check.status == "failed", (name, check)
    assert check.rule == rule, check
    for fragment in fragments:
        assert fragment in check.detail, (fragment, check.detail)
    assert not report.passed
    with pytest.raises(ValidationRefused) as caught:
        require_valid(report)
    assert f"{name}: {check.detail}" in str(caught.value)
    assert caught.value.report is report
    return check


def not_run(report, *names: str) -> None:
    for name in names:
        assert report.check(name).status == "failed-dependency", report.check(name)


# -- models that break one rule each --------------------------------------------------


class Unsqueezed(TinyCredit):
    def forward(self, x):
        return torch.sigmoid(self.logit(x)).unsqueeze(-1)


class Logits(TinyCredit):
    def forward(self, x):
        return 5.0 * self.logit(x)


class NanAtZeroAmount(TinyCredit):
    def forward(self, x):
        return torch.sigmoid(self.logit(x)) * (x[:, 1] / x[:, 1])  # 0/0 at amount 0 (its minimum)


class RandomNoise(TinyCredit):
    def forward(self, x):
        return torch.sigmoid(self.logit(x + torch.rand_like(x)))


class Float64Inside(TinyCredit):
    def forward(self, x):
        return torch.sigmoid(self.logit(x).double()).float()


class Branching(TinyCredit):
    def forward(self, x):
        p = torch.sigmoid(self.logit(x))
        return torch.cond(x[:, 0].sum() > 100, lambda p: p * 0.5, lambda p: p * 0.25 + 0.5, (p,))


class BatchStatistics(TinyCredit):
    def forward(self, x):
        return torch.sigmoid(self.logit(x - x.mean(0, keepdim=True)))


class Counting(TinyCredit):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("calls", torch.zeros(1))

    def forward(self, x):
        self.calls.add_(1)
        return torch.sigmoid(self.logit(x))


class Histogram(TinyCredit):
    def forward(self, x):
        return torch.sigmoid(self.logit(x)) + 0 * torch.histc(x, 4).sum()


class EvalDropout(TinyCredit):
    def __init__(self) -> None:
        super().__init__()
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        return torch.sigmoid(self.logit(self.drop(x)))


EIGHT_SPECS = (
    *TINY_SPECS,
    AttributeSpec("dependents", "integer", "Dependents", minimum=0, maximum=5),
    AttributeSpec("existing_credits", "integer", "Existing credits", minimum=0, maximum=4),
    AttributeSpec("installment_rate", "integer", "Installment rate", minimum=1, maximum=4),
)


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return write_model_dir(tmp_path_factory.mktemp("good") / "model")


@pytest.fixture(scope="module")
def good_report(good):
    """The whole validation, fresh processes included, with the eager module and training rows."""
    return validate_directory(good.directory, eager=good.module, training_rows=good.training_rows)


def variant(tmp_path, good, **knobs):
    """A copy of the good directory with one thing changed (the good artifact unless a module is given)."""
    if "module" not in knobs and "artifact" not in knobs:
        knobs.update(module=good.module, artifact=good.artifact)
    return write_model_dir(tmp_path / "model", **knobs).directory


# -- a good model ---------------------------------------------------------------------


def test_a_good_model_passes_every_check(good_report):
    assert [check.name for check in good_report.checks] == list(CHECKS)
    assert {check.name: check.status for check in good_report.checks} == dict.fromkeys(CHECKS, "passed")
    assert good_report.passed
    require_valid(good_report)
    assert good_report.check("export_vs_eager").detail.startswith("bit-identical to the eager module")
    assert good_report.check("fresh_processes").measured["processes"] == 2
    assert good_report.check("sampled_vs_exact").detail.startswith("the manifest explains exactly")
    assert good_report.model == "tiny-credit:1.0.0" and good_report.validator.startswith("verdict ")
    assert {"python", "torch", "platform", "machine", "cpu"} <= set(good_report.environment)


def test_the_report_names_protected_attributes_among_principal_reasons(good_report):
    summary = good_report.protected_among_reasons
    assert summary is not None and summary.protected_attributes == ["age_years"]
    assert summary.explained_rows >= 16
    by_attribute = {f.attribute: f for f in good_report.reason_frequency}
    assert set(by_attribute) == {spec.name for spec in TINY_SPECS}
    assert by_attribute["age_years"].protected
    assert summary.rows_with_protected_reason == by_attribute["age_years"].principal
    assert good_report.check("protected_among_reasons").passed  # informational, never a refusal


def test_the_report_round_trips_and_is_deterministic_apart_from_the_time(good, tmp_path):
    first, second = validate(good.directory), validate(good.directory)
    assert decode_report(encode_report(first)) == first
    strip = lambda report: encode_report(msgspec.structs.replace(report, validated_at=""))  # noqa: E731
    assert strip(first) == strip(second)
    assert first.check("fresh_processes").status == "skipped"


def test_the_german_reference_model_passes(trained_dirs):
    directory = trained_dirs["german-credit"]
    manifest = decode_manifest((directory / MANIFEST_FILE).read_bytes())
    names = [spec.name for spec in manifest.inputs]
    rows = [{name: row[name] for name in names} for row in load_dataset("german-credit").rows]
    written_before = (directory / VALIDATION_FILE).exists()
    report = validate(directory, training_rows=rows)
    statuses = {check.name: check.status for check in report.checks}
    skipped = {name for name, status in statuses.items() if status == "skipped"}
    assert skipped == {"heldout_rows", "export_vs_eager", "fresh_processes", "sampled_vs_exact"}, statuses
    assert report.passed, render_text(report)
    assert report.check("training_rows").measured["rows"] == 1000
    assert (directory / VALIDATION_FILE).exists() == written_before  # validation writes nothing by itself


def test_a_permutation_explainer_is_compared_with_exact_values(good, tmp_path):
    withheld = (WithheldAttribute("sex", "Sex", "protected characteristic, not given to the model"),)
    report = validate(variant(tmp_path, good, algorithm="permutation", permutations=2, withheld=withheld))
    assert report.passed, render_text(report)
    exact = report.check("sampled_vs_exact")
    assert exact.detail.startswith("informational: sampled (2 antithetic permutation pair(s))")
    assert exact.measured["rows"] >= 16 and isinstance(exact.measured["max_abs_error"], float)
    assert report.protected_among_reasons.withheld == list(withheld)
    assert "sex" in report.check("protected_among_reasons").detail


# -- the artifact ---------------------------------------------------------------------


def test_random_bytes_are_refused(good, tmp_path):
    report = validate(variant(tmp_path, good, artifact=os.urandom(4096)))
    refused(report, "artifact_format", "artifact.zip", "not a zip archive", "torch.export.save")
    not_run(report, "graph_input", "graph_random_ops", "outputs", "additivity", "protected_among_reasons")
    assert report.check("files").passed  # the hash matches: the bytes are what the manifest names, just wrong


def test_a_pickled_state_dict_is_refused(good, tmp_path):
    buffer = io.BytesIO()
    torch.save(good.module.state_dict(), buffer)
    report = validate(variant(tmp_path, good, artifact=buffer.getvalue()))
    refused(
        report,
        "artifact_format",
        "artifact.state_dict",
        "a pickled state_dict, not an exported program: export with torch.export.export, or package from a factory",
    )


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit is deprecated: which is the point
def test_torchscript_is_refused(good, tmp_path):
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.trace(TinyCredit(), torch.ones(4, len(TINY_SPECS))), buffer)
    report = validate(variant(tmp_path, good, artifact=buffer.getvalue()))
    refused(report, "artifact_format", "artifact.torchscript", "TorchScript", "code/", "constants.pkl")


class _Planted:
    """Unpickling this creates a file: proof, if it exists, that the validator unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_whole_pickled_module_is_refused_without_unpickling_it(good, tmp_path):
    marker = tmp_path / "unpickled"
    buffer = io.BytesIO()
    torch.save(_Planted(marker), buffer)
    assert not marker.exists()
    report = validate(variant(tmp_path, good, artifact=buffer.getvalue()))
    refused(report, "artifact_format", "artifact.pickle", "refused unopened")
    assert not marker.exists()


def test_a_pickled_constant_inside_a_pt2_archive_is_refused_unopened(good, tmp_path):
    """An exported archive whose constants config says 'unpickle me' (torch.export.load would)."""
    source = zipfile.ZipFile(io.BytesIO(good.artifact))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename.endswith("model_constants_config.json"):
                data = json.dumps(
                    {"config": {"planted": {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": True}}}
                ).encode()
            target.writestr(info, data)
    report = validate(variant(tmp_path, good, artifact=out.getvalue()))
    refused(report, "artifact_format", "artifact.pickled_payload", "'planted'", "refused unopened")


def test_a_damaged_archive_is_refused_with_the_cause_torch_only_logged(good, tmp_path):
    """torch.export.load logs the real cause with a traceback, then raises "check the warnings
    above": the refusal quotes the cause, and nothing of torch's reaches the terminal."""
    source = zipfile.ZipFile(io.BytesIO(good.artifact))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            if not info.filename.endswith("data/weights/weight_0"):
                target.writestr(info, source.read(info))
    directory = variant(tmp_path, good, artifact=out.getvalue())
    refused(validate(directory), "artifact_format", "artifact.load", "failed locating file data/weights/weight_0")
    done = _cli(str(directory), "--no-fresh-processes")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "data/weights/weight_0" in done.stdout
    for noise in ("Traceback", "torch/export", "warnings above"):
        assert noise not in done.stdout + done.stderr, done.stdout + done.stderr


# -- the graph ------------------------------------------------------------------------


def test_a_static_batch_export_is_refused(tmp_path):
    report = validate(write_model_dir(tmp_path / "model", dynamic_batch=False, export_rows=1).directory)
    refused(
        report,
        "graph_input",
        "graph.input.dynamic_batch",
        "the batch dimension is static (1 row): ",
        "dynamic batch dimension (torch.export.Dim",
    )
    not_run(report, "outputs", "batch_invariance", "fresh_processes", "additivity")


def test_a_batch_by_one_output_is_refused(tmp_path):
    report = validate(write_model_dir(tmp_path / "model", Unsqueezed()).directory)
    refused(report, "graph_output", "graph.output.shape", "[batch, 1]", ".squeeze(-1)")


def test_a_graph_with_seven_inputs_for_eight_attributes_is_refused(tmp_path):
    model = write_model_dir(tmp_path / "model", TinyCredit(columns=7), EIGHT_SPECS, export_columns=7)
    report = validate(model.directory)
    refused(report, "graph_input", "graph.input.columns", "graph takes 7 inputs per row, manifest has 8 attributes")


def test_random_ops_in_forward_are_refused(tmp_path):
    report = validate(write_model_dir(tmp_path / "model", RandomNoise()).directory)
    refused(report, "graph_random_ops", "graph.random_ops", "aten.rand_like", "model.eval()")


def test_eval_mode_dropout_is_not_a_random_op(tmp_path):
    report = validate(write_model_dir(tmp_path / "model", EvalDropout()).directory)
    assert report.check("graph_random_ops").passed, report.check("graph_random_ops")


def test_float64_inside_a_float32_graph_is_refused(tmp_path):
    report = validate(write_model_dir(tmp_path / "model", Float64Inside()).directory)
    check = refused(report, "graph_dtypes", "graph.dtype.float32_only", "produces float64", "aten.")
    assert re.search(r"node \w+ \(aten\.\w+\.\w+\) produces float64", check.detail)


def test_data_dependent_control_flow_is_refused(tmp_path):
    report = validate(write_model_dir(tmp_path / "model", Branching()).directory)
    refused(report, "graph_control_flow", "graph.control_flow", "higher_order.cond", "torch.where")


def test_state_kept_between_calls_is_refused(tmp_path):
    report = validate(write_model_dir(tmp_path / "model", Counting()).directory)
    refused(
        report, "graph_state", "graph.state", "forward writes calls (buffer) in place (node add_, aten.add_.Tensor)"
    )
    not_run(report, "outputs")


def test_ops_without_a_deterministic_kernel_are_refused(tmp_path):
    report = validate(write_model_dir(tmp_path / "model", Histogram()).directory)
    refused(report, "graph_nondeterministic_ops", "graph.nondeterministic_ops", "aten.histc.default", "CUDA")


# -- outputs and bits -----------------------------------------------------------------


def test_logits_under_a_probability_manifest_are_refused(tmp_path):
    report = validate(write_model_dir(tmp_path / "model", Logits()).directory)
    refused(
        report,
        "outputs",
        "outputs.probability_range",
        "outputs outside [0, 1] (min ",
        "a probability model must end in a sigmoid; is it returning logits?",
    )
    distribution = report.output_distribution
    assert distribution is not None and (distribution.minimum < 0 or distribution.maximum > 1)


def test_nan_outputs_are_refused_naming_the_row(tmp_path):
    report = validate(write_model_dir(tmp_path / "model", NanAtZeroAmount()).directory)
    check = refused(report, "outputs", "outputs.finite", "not finite", "boundary: amount at minimum 0.0 -> nan")
    assert "np.float32" not in check.detail
    assert check.measured["non_finite"] >= 1
    assert report.check("graph_dtypes").passed  # the graph is fine; its arithmetic is not


def test_a_row_that_depends_on_its_batch_is_refused(tmp_path):
    report = validate(write_model_dir(tmp_path / "model", BatchStatistics()).directory)
    refused(report, "batch_invariance", "batch.bit_identical", "differ", "alone")


def test_an_export_that_differs_from_its_eager_module_is_refused(good):
    report = validate(good.directory, eager=TinyCredit(seed=99))
    check = refused(report, "export_vs_eager", "eager.tolerance", "differ beyond", "the eager module")
    number = r"-?\d+(\.\d+)?(e[+-]\d+)?"  # as a person writes it: 0.5676211, not np.float32(0.5676211)
    assert re.search(rf"\(worst \S+: exported {number}, eager {number}\)", check.detail), check.detail


def test_stored_eager_outputs_that_differ_are_refused(good, tmp_path):
    def shift(heldout):
        return msgspec.structs.replace(heldout, eager_outputs=[v + 1e-3 for v in heldout.eager_outputs])

    report = validate(variant(tmp_path, good, edit_heldout=shift))
    refused(report, "export_vs_eager", "eager.tolerance", "heldout.json's eager_outputs")


# -- rows -----------------------------------------------------------------------------


def test_a_background_row_that_breaks_the_schema_is_refused(good, tmp_path):
    def young(rows):
        return [*rows[:2], {**rows[2], "age_years": 7}, *rows[3:]]

    report = validate(variant(tmp_path, good, edit_background=young))
    refused(report, "background", "background.schema", "background.rows[2].age_years: must be >= 18")
    assert report.check("files").passed
    not_run(report, "additivity", "sampled_vs_exact")


def test_training_rows_that_break_the_schema_are_reported_by_row_and_field(good):
    rows = [*good.training_rows[:3], {**good.training_rows[3], "purpose": "boat"}]
    report = validate(good.directory, training_rows=rows)
    refused(report, "training_rows", "training.schema", "1 of 4 training rows", "training.rows[3].purpose")


# -- the manifest ---------------------------------------------------------------------


def _explainer(**changes):
    return lambda m: msgspec.structs.replace(m, explainer=msgspec.structs.replace(m.explainer, **changes))


def test_a_wrong_seed_policy_is_refused(good, tmp_path):
    report = validate(variant(tmp_path, good, edit_manifest=_explainer(seed_policy="sha256(request_id)")))
    refused(report, "manifest_explainer", "explainer.seed_policy", "'sha256(request_id)'", "SEED_POLICY")
    not_run(report, "additivity")


def test_too_low_max_evaluations_is_refused(good, tmp_path):
    report = validate(variant(tmp_path, good, edit_manifest=_explainer(max_evaluations=10)))
    refused(report, "manifest_explainer", "explainer.max_evaluations", "max_evaluations 10 is below the 241 model rows")


def test_a_reason_template_typo_is_refused(good, tmp_path):
    templates = {"increased_risk": "{lable}: {value} raised the risk", "decreased_risk": "{label}: {value} lowered it"}
    report = validate(variant(tmp_path, good, edit_manifest=_explainer(reason_templates=templates)))
    refused(
        report, "manifest_reasons", "reason_templates.fields", "increased_risk", "uses {lable}", "{label} and {value}"
    )
    not_run(report, "protected_among_reasons")


def test_a_threshold_outside_the_probability_range_is_refused_by_the_manifest(good, tmp_path):
    edit = lambda m: msgspec.structs.replace(m, decision=msgspec.structs.replace(m.decision, threshold=7.5))  # noqa: E731
    report = validate(variant(tmp_path, good, edit_manifest=edit))
    refused(report, "files", "files.manifest", "decision.threshold 7.5 must be in (0, 1]")
    assert report.model == "tiny-credit:1.0.0"
    not_run(report, "graph_input", "manifest_explainer", "background", "outputs", "protected_among_reasons")
    assert report.check("artifact_format").passed  # what could still be checked was


def test_missing_files_are_named_and_a_missing_directory_raises(good, tmp_path):
    directory = variant(tmp_path, good)
    (directory / ARTIFACT_FILE).unlink()
    report = validate(directory)
    refused(report, "files", "files.missing", "model.pt2 is missing")
    not_run(report, "artifact_format", "graph_input", "outputs")
    with pytest.raises(NotADirectoryError):
        validate(tmp_path / "nowhere")


# -- reports and the command line -----------------------------------------------------


class _Page(HTMLParser):
    VOID: ClassVar[set[str]] = {"meta", "br", "img", "hr", "input", "link", "path", "use", "rect", "stop"}

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.sources: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        for name, value in attrs:
            if name in ("src", "href", "xlink:href") or tag in ("script", "link"):
                self.sources.append(f"{tag} {name}={value}")
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.add(tag)
        for name, value in attrs:
            if name in ("src", "href", "xlink:href"):
                self.sources.append(f"{tag} {name}={value}")

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        assert self.open and self.open[-1] == tag, (tag, self.open[-5:])
        self.open.pop()


def test_the_html_report_is_well_formed_and_self_contained(good_report):
    page = render_html(good_report)
    parser = _Page()
    parser.feed(page)
    parser.close()
    assert parser.open == []
    assert {"html", "table", "svg", "figure"} <= parser.tags
    assert "script" not in parser.tags
    assert not [s for s in parser.sources if re.search(r"=\s*(https?:)?//", s)], parser.sources
    assert not re.search(r"(src|href)\s*=\s*['\"]?https?://", page)
    assert "PASSED" in page and "Age (protected)" in page


def test_a_refused_report_reads_without_colour(good, tmp_path):
    report = validate(variant(tmp_path, good, artifact=b"not a model"))
    text, page = render_text(report), render_html(report)
    assert "FAIL     artifact_format" in text and "NOT RUN  graph_input" in text
    counted = sum(1 for check in report.checks if check.status == "failed-dependency")
    assert f", {counted} not run\n" in text and "failed-dependency" not in text  # one word for one status
    assert "REFUSED" in page and ">FAIL<" in page and ">NOT RUN<" in page


def _cli(*args: str, cwd: Path = PROJECT) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "verdict", "models", "validate", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )


def test_the_command_line_writes_reports_and_exits_by_verdict(good, tmp_path):
    directory = variant(tmp_path / "ok", good)
    json_path = tmp_path / "elsewhere.json"
    passed = _cli(str(directory), "--no-fresh-processes", "--json", str(json_path))
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "PASSED" in passed.stdout and "Traceback" not in passed.stderr
    report = decode_report(json_path.read_bytes())
    assert report.passed and report.model == "tiny-credit:1.0.0"
    assert (directory / VALIDATION_HTML).read_text().startswith("<!DOCTYPE html>")
    assert not (directory / VALIDATION_FILE).exists()  # --json moved it

    broken = variant(tmp_path / "broken", good, artifact=b"\x00" * 64)
    failed = _cli(str(broken), "--no-fresh-processes")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "REFUSED" in failed.stdout and "not a zip archive" in failed.stdout
    stored = decode_report((broken / VALIDATION_FILE).read_bytes())
    assert not stored.passed and stored.check("artifact_format").rule == "artifact.zip"
    assert (
        hashlib.sha256((broken / VALIDATION_FILE).read_bytes()).hexdigest()
        == hashlib.sha256(encode_report(stored)).hexdigest()
    )

    missing = _cli(str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "is not a directory" in missing.stderr
