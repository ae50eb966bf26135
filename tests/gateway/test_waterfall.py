"""The waterfall chart renders headless to a real PNG and a real SVG that names the top attributes."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import msgspec
import pytest

from tests.gateway.conftest import PROJECT
from verdict.gateway.datasets import load_dataset
from verdict.gateway.explanation import Explainer, seed_for
from verdict.gateway.manifest import encode_manifest
from verdict.gateway.reasons import reasons
from verdict.gateway.schema import encode_rows
from verdict.gateway.waterfall import render_waterfall

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def decision(german_model, registry):
    manifest = german_model.manifest
    attributes = load_dataset("german-credit").rows[1]
    x = encode_rows(manifest.inputs, [attributes])
    scores, _ = german_model.score_matrix(x)
    result = Explainer(german_model, registry.background(manifest)).explain(x, scores, [seed_for("waterfall")])[0]
    return manifest, attributes, result


def test_png_is_a_real_image(decision):
    from matplotlib import image

    png = render_waterfall(*decision, fmt="png")
    assert png.startswith(PNG_SIGNATURE)
    pixels = image.imread(io.BytesIO(png), format="png")
    height, width = pixels.shape[:2]
    assert 500 <= width <= 2000 and 300 <= height <= 1500
    assert pixels.std() > 0.05  # something was drawn


def test_svg_parses_and_names_the_top_attributes(decision):
    manifest, attributes, result = decision
    svg = render_waterfall(manifest, attributes, result, fmt="svg")
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    text = " ".join("".join(element.itertext()) for element in root.iter() if element.tag.endswith("text"))
    for reason in reasons(manifest, attributes, result, top=4):
        assert reason.label in text
        assert reason.value in text
    assert render_waterfall(manifest, attributes, result, fmt="svg") == svg  # same decision, same bytes


def test_unknown_format_is_refused(decision):
    with pytest.raises(ValueError, match="png, svg"):
        render_waterfall(*decision, fmt="gif")


_RENDER = """
import pathlib, sys, msgspec
from verdict.gateway.explanation import ExplanationResult
from verdict.gateway.manifest import decode_manifest
from verdict.gateway.waterfall import render_waterfall
folder = pathlib.Path(sys.argv[1])
manifest = decode_manifest((folder / "manifest.json").read_bytes())
attributes = msgspec.json.decode((folder / "attributes.json").read_bytes())
result = msgspec.json.decode((folder / "result.json").read_bytes(), type=ExplanationResult)
sys.stdout.buffer.write(render_waterfall(manifest, attributes, result, "png"))
"""


def test_renders_in_a_fresh_process_without_a_display(decision, tmp_path):
    """No display and an interactive backend configured: the chart still renders."""
    manifest, attributes, result = decision
    (tmp_path / "manifest.json").write_bytes(encode_manifest(manifest))
    (tmp_path / "attributes.json").write_bytes(msgspec.json.encode(attributes))
    (tmp_path / "result.json").write_bytes(msgspec.json.encode(result))
    env = {key: value for key, value in os.environ.items() if key not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["MPLBACKEND"] = "TkAgg"
    done = subprocess.run(
        [sys.executable, "-c", _RENDER, str(tmp_path)], cwd=PROJECT, env=env, capture_output=True, timeout=300
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert done.stdout == render_waterfall(manifest, attributes, result, fmt="png")
