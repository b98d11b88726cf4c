"""The torch-free downstream example, on digits from the real test set drawn as image files."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT
from export.formats import export_model
from job.data import load_mnist
from job.model import build_model
from job.train import train_model
from job.settings import RECIPES
from dataclasses import replace


@pytest.fixture(scope="module")
def small_trained_onnx(real_data_dir, tmp_path_factory):
    """A plain LeNet trained for 2 epochs on 12,000 real images: enough to read clean digits."""
    recipe = replace(RECIPES["default"], epochs=2, batch_size=64, learning_rate=0.05, max_shift=0)
    data = load_mnist(real_data_dir, download=False, normalize=True, train_limit=12000, test_limit=1000)
    torch.manual_seed(0)
    model = build_model("plain", recipe.dropout)
    _, final = train_model(model, data.train, data.test, recipe, seed=0, eval_batch_size=1000)
    assert final.accuracy > 0.95, "the fixture's model must read clean digits before the CLI is judged on them"
    metadata = {"preprocess.scale": repr(1 / 255), "preprocess.mean": "0.1307", "preprocess.std": "0.3081"}
    paths = export_model(model.eval(), tmp_path_factory.mktemp("model"), metadata)
    raw = load_mnist(real_data_dir, download=False, normalize=False, test_limit=1000).test
    return paths["onnx"], raw


def test_predicts_digits_drawn_both_ways_and_at_other_sizes(small_trained_onnx, tmp_path):
    onnx_path, test = small_trained_onnx
    files, expected = [], []
    for i in range(12):
        pixels = (test.images[i, 0].numpy() * 255).round().astype(np.uint8)
        image = Image.fromarray(pixels)
        if i % 2:  # a scan: dark digit on light paper, larger, in colour, as JPEG
            image = Image.fromarray(255 - pixels).resize((112, 112)).convert("RGB")
            path = tmp_path / f"digit{i}.jpg"
            image.save(path, quality=95)
        else:
            path = tmp_path / f"digit{i}.png"
            image.save(path)
        files.append(str(path))
        expected.append(int(test.labels[i]))
    done = subprocess.run([sys.executable, "-m", "export.predict", str(onnx_path), *files], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = [line.split("\t") for line in done.stdout.splitlines()]
    assert [row[0] for row in rows] == files
    predicted = [int(row[1]) for row in rows]
    assert sum(p == e for p, e in zip(predicted, expected)) >= 11, (predicted, expected)
    assert all(0.1 <= float(row[2]) <= 1.0 for row in rows)


def test_a_file_that_is_not_an_image_is_a_one_line_error(small_trained_onnx, tmp_path):
    onnx_path, _ = small_trained_onnx
    bogus = tmp_path / "note.png"
    bogus.write_text("not a picture")
    done = subprocess.run([sys.executable, "-m", "export.predict", str(onnx_path), str(bogus)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("predict: ") and done.stderr.count("\n") == 1
