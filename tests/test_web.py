"""The reference app (web/): the contract's preprocessing ported to JavaScript gives Python's bytes, and the page,
served by its documented command, reads digits drawn with a real mouse in headless Chromium."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image, ImageDraw

from bench.digits import STROKES, make_sample
from bench.families import FAMILIES, HELD_OUT, TUNING, family_samples, mnist_test_set
from conftest import ROOT, job_env, seven
from lenet_client.ink import NoDigitError
from lenet_client.preprocess import to_mnist

WEB = ROOT / "web"
NODE = shutil.which("node")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def installed() -> None:
    if NODE is None or not (WEB / "node_modules" / "onnxruntime-web").is_dir():
        pytest.fail("node and web/node_modules are needed: `make test` installs them (apt install nodejs npm; "
                    "npm ci --prefix web)")


def varied_pictures(data_dir: Path):
    """(name, PIL image): every family of the preprocessing benchmark, tuning and held out, 14 each (4 of the large
    page photos), the benchmark's mixed pictures in every colour form, and pictures with alpha channels."""
    mnist = mnist_test_set(data_dir)
    for family in TUNING + HELD_OUT:
        count = 4 if family == "photo of a page" else 14
        for index, sample in enumerate(family_samples(family, count, seed=7, mnist_images=mnist)):
            yield f"{family}-{index}", sample.image
    rng = np.random.default_rng(11)
    for index in range(24):
        yield f"mixed-{index}", make_sample(index % 10, rng).image
    ink = seven(ink=255, paper=0)
    for colour in [(20, 20, 200), (255, 255, 255), (0, 0, 0)]:
        drawing = Image.new("RGBA", ink.size, colour + (0,))
        drawing.putalpha(ink)
        yield f"drawing on a transparent canvas {colour}", drawing
    for radius in (0, 30, 100):
        framed = seven(ink=30, paper=220).convert("RGBA")
        mask = Image.new("L", framed.size, 0)
        ImageDraw.Draw(mask).rounded_rectangle([(0, 0), (framed.width - 1, framed.height - 1)], radius, fill=255)
        framed.putalpha(mask)
        yield f"rounded corners {radius}", framed
    yield "blank", Image.new("L", (60, 40), 255)
    yield "noise only", Image.fromarray(np.random.default_rng(3).integers(0, 256, (80, 80), dtype=np.uint8))


@pytest.fixture(scope="module")
def pictures_for_node(real_data_dir, tmp_path_factory):
    """The varied pictures as RGBA bytes (what a browser's canvas gives) with Python's 28x28 bytes for each."""
    folder = tmp_path_factory.mktemp("web-pictures")
    count = 0
    for index, (name, image) in enumerate(varied_pictures(real_data_dir)):
        try:
            expected = to_mnist(image).tobytes()
        except NoDigitError:
            expected = b"no digit"
        rgba = image.convert("RGBA")
        (folder / f"{index:03d}.{rgba.width}x{rgba.height}.rgba").write_bytes(rgba.tobytes())
        (folder / f"{index:03d}.expected").write_bytes(expected)
        count += 1
    assert count >= 200
    return folder


def test_the_javascript_port_gives_pythons_bytes_and_reads_the_models_metadata(pictures_for_node, tmp_path):
    installed()
    from export.formats import export_model
    from job.model import build_model

    metadata = {"model.variant": "plain", "preprocess.scale": repr(1 / 255), "preprocess.mean": "0.1307",
                "preprocess.std": "0.3081", "run.id": "20261130T000000Z-ünïcode"}
    model = export_model(build_model("plain", 0.1).eval(), tmp_path, metadata)["onnx"]
    stored = {p.key: p.value for p in onnx.load(model).metadata_props}
    env = os.environ | {"LENET_WEB_PICTURES": str(pictures_for_node), "LENET_WEB_MODEL": str(model),
                        "LENET_WEB_MODEL_METADATA": json.dumps(stored)}
    done = subprocess.run([NODE, "--test", "test/"], cwd=WEB, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert re.search(r"^# pass 6$", done.stdout, re.M) and re.search(r"^# skipped 0$", done.stdout, re.M), \
        done.stdout[-2000:]
