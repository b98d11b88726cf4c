"""The client alone: a virtual environment with only `pip install ./client` reads pictures with an exported model,
without torch, and reads them exactly as the job's own environment does."""

import json
import subprocess
import sys
import venv

import pytest
import torch

from conftest import ROOT
from export.formats import export_model
from job.outcome.metadata import model_metadata
from job.settings import RECIPES
from job.training.model import build_model

PICTURE = ROOT / "docs" / "images" / "digit-7.png"


@pytest.fixture(scope="module")
def client_only(tmp_path_factory):
    folder = tmp_path_factory.mktemp("client-venv")
    venv.create(folder, with_pip=True)
    done = subprocess.run([folder / "bin" / "pip", "install", "--quiet", "--disable-pip-version-check",
                           "-c", ROOT / "constraints.txt", ROOT / "client"], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    return folder


def test_the_client_installs_alone_and_predicts_as_the_jobs_environment_does(client_only, tmp_path):
    torch.manual_seed(0)
    model = build_model("plain", 0.0).eval()  # any weights: the two environments must agree on them
    metadata = model_metadata("plain", RECIPES["default"], 0.0, 1.0, 0.9, "r", __import__("datetime").datetime.now())
    onnx_path = export_model(model, tmp_path, metadata)["onnx"]
    command = ["--json", str(onnx_path), str(PICTURE)]
    alone = subprocess.run([client_only / "bin" / "lenet-predict", *command], capture_output=True, text=True,
                           timeout=120, cwd=tmp_path)
    here = subprocess.run([sys.executable, "-m", "lenet_client", *command], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert alone.returncode == 0 and here.returncode == 0, (alone.stderr, here.stderr)
    assert json.loads(alone.stdout)["results"] == json.loads(here.stdout)["results"]
    installed = subprocess.run([client_only / "bin" / "python", "-c", "import importlib.util as u; print("
                                "[m for m in ('torch', 'job', 'export', 'pydantic') if u.find_spec(m)])"],
                               capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert installed.stdout.strip() == "[]", installed.stdout
