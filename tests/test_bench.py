"""The benchmark's workers, on tiny workloads: they must keep running, or `make bench` rots unnoticed.
Their timings are not asserted (figures come from `make bench`, docs/performance.md)."""

import json
import re
import subprocess
import sys

import pytest

from conftest import PYTHON, ROOT
from job.settings import RECIPES

pytestmark = pytest.mark.slow  # each test starts the benchmark's workers, which train or run the job


def bench_worker(*args: str) -> dict:
    done = subprocess.run([PYTHON, "-m", "bench", "--worker", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_training_steps_times_the_default_recipes_step():
    result = bench_worker("training_steps", "--variant", "bn_dropout", "--steps", "3")
    assert result["batch_size"] == RECIPES["default"].batch_size and result["epochs"] == RECIPES["default"].epochs
    assert 0 < result["seconds_per_step"] < 10


@pytest.mark.parametrize("kind", ["tutorial", "job_seed_recipe"])
def test_both_pipelines_train_and_report_their_test_accuracy(kind, real_data_dir):
    """One epoch of the tutorial's recipe on 2,000 images: both pipelines learn (about 72 % here, chance is 10 %),
    and the figure is a share of the 10,000 test images."""
    result = bench_worker(kind, "--variant", "bn_dropout", "--epochs", "1", "--train-limit", "2000",
                          "--data-dir", str(real_data_dir))
    correct = result["accuracy"] * 10000
    assert result["accuracy"] > 0.5 and abs(correct - round(correct)) < 1e-6
    assert result["seconds"] > 0 and result["peak_rss_mb"] > 0


def test_job_run_times_the_job_from_process_start_and_reads_its_stages(real_data_dir, tmp_path):
    from conftest import TINY, job_env

    env = job_env(tmp_path, real_data_dir, **(TINY | {"variants": "plain,bn_dropout", "train_limit": 256}))
    done = subprocess.run([PYTHON, "-m", "bench", "--worker", "job_run"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(result["accuracy"]) == set(result["stages"]) == {"plain", "bn_dropout"}
    assert result["seconds"] > result["inside_seconds"] > max(s["parity"] for s in result["stages"].values()) > 0
    # The same run's models, piece by piece (bench.parity): every runner of every variant gets its seconds.
    (run_dir,) = (tmp_path / "outputs" / "runs").iterdir()
    pieces = subprocess.run([PYTHON, "-m", "bench.parity", str(run_dir), "--data-dir", str(real_data_dir),
                             "--test-limit", "256", "--batch", "128"], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert pieces.returncode == 0, pieces.stderr[-2000:]
    rows = [line.split() for line in pieces.stdout.splitlines()[1:]]
    assert {(row[0], row[1]) for row in rows if row[1] in ("torchscript", "torch_export", "total")} == {
        (variant, runner) for variant in ("plain", "bn_dropout") for runner in ("torchscript", "torch_export", "total")}
    assert all(float(row[-1]) > 0 for row in rows)


def test_stages_sums_py_spy_samples_per_stage_of_the_job():
    from bench.stages import OTHER, seconds_by_stage

    lines = ["main (job/__main__.py:9);check_parity (export/parity.py:60);GraphModule.recompile.<locals>.call_wrapped "
             "(torch/fx/graph_module.py:1007) 150\n",
             "main;check_parity (export/parity.py:60);onnx_runner.<locals>.<lambda> (export/parity.py:35) 50\n",
             "main;train_model (job/training/train.py:120);backward 300\n",
             "_Py_Finalize 20\n", "not a sample line\n"]
    assert seconds_by_stage(lines, rate=100) == {"training + per-epoch evaluation": 3.0,
                                                 "parity: torch.export program": 1.5,
                                                 "parity: onnxruntime (2 sessions)": 0.5, OTHER: 0.2}


def test_every_picture_family_draws_its_digits_and_score_counts_a_predictors_json(real_data_dir, tmp_path):
    from bench.families import HELD_OUT, TUNING, family_samples, slug
    from bench.score import confidence, scores
    from job.training.data import read_split

    images, labels = read_split(real_data_dir, train=False, limit=None)
    results = []
    for family in TUNING + HELD_OUT:
        samples = family_samples(family, 3, seed=0, mnist_images=(images.numpy(), labels.numpy()))
        assert len(samples) == 3 and all(min(s.image.size) >= 8 for s in samples), family
        for index, sample in enumerate(samples):  # a predictor that reads the first picture right, refuses the last
            path = f"{slug(family)}/{sample.digit}/{index}.png"
            results.append({"path": path, "error": "no ink", "status": 5} if index == 2 else
                           {"path": path, "digit": sample.digit if index == 0 else (sample.digit + 1) % 10,
                            "probability": 0.9 if index == 0 else 0.6, "unsure": index == 1})
    (tmp_path / "results.json").write_text(json.dumps({"results": results}))
    found = scores(tmp_path / "results.json")
    assert found == {slug(f): (100 / 3, 1, 3) for f in TUNING + HELD_OUT}
    # Read right at 0.9, wrong at 0.6 (and unsure): gaps of 0.1 and 0.6 over equal halves; the surest 80 % (4 in 5
    # of the pictures read) hold every right answer; every sure answer is right.
    error, surest, unsure, sure = confidence(tmp_path / "results.json")
    assert error == pytest.approx(0.35) and surest == pytest.approx(100 * 0.5 / 0.8, rel=0.05) and unsure == 50 \
        and sure == 100


def test_the_gpu_script_skips_its_cuda_steps_cleanly_without_cuda(tmp_path):
    """bench/gpu.sh as the CPU dry run of the day a GPU is lent: every step runs or says why not, exit 0."""
    import os

    env = os.environ | {"PYTHON": PYTHON, "OUT": str(tmp_path), "CUDA_VISIBLE_DEVICES": "",
                        "GPU_TESTS": "tests/test_device.py"}
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu.sh")], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    steps = (tmp_path / "steps.log").read_text()
    assert "== no CUDA device: the job on the GPU and the profile are skipped" in steps
    assert "cuda available: False" in (tmp_path / "machine.txt").read_text()
    assert " passed" in (tmp_path / "tests.log").read_text().splitlines()[-1]
    assert not (tmp_path / "job.log").exists()
    # The dry run takes one file; the day a GPU is lent, the script runs its default list: every file must exist.
    defaults = re.search(r"\$\{GPU_TESTS:-([^}]+)\}", (ROOT / "bench" / "gpu.sh").read_text()).group(1).split()
    assert len(defaults) >= 3 and all((ROOT / name).is_file() for name in defaults), defaults


@pytest.mark.parametrize("rounds", ["0", "-1", "2.5", "x"])
def test_targets_refuses_a_number_of_rounds_that_is_not_a_positive_integer(rounds, monkeypatch, capsys):
    import bench.__main__

    monkeypatch.setattr(sys, "argv", ["bench", f"--targets={rounds}"])
    with pytest.raises(SystemExit) as exited:
        bench.__main__.main()
    out, err = capsys.readouterr()
    assert exited.value.code == 2 and out == ""
    assert err.splitlines()[-1] == (f"python -m bench: error: argument --targets: {rounds!r} is not a number "
                                    f"of rounds (allowed: an integer >= 1)")
