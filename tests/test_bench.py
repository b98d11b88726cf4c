"""The benchmark's workers, on tiny workloads: they must keep running, or `make bench` rots unnoticed.
Their timings are not asserted (figures come from `make bench`, docs/performance.md)."""

import json
import subprocess

import pytest

from job.settings import RECIPES
from conftest import PYTHON, ROOT


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
def test_both_pipelines_train_and_report_an_accuracy(kind, real_data_dir):
    result = bench_worker(kind, "--variant", "plain", "--epochs", "1", "--train-limit", "320",
                          "--data-dir", str(real_data_dir))
    assert 0 <= result["accuracy"] <= 1 and result["seconds"] > 0 and result["peak_rss_mb"] > 0


def test_job_run_times_the_job_from_process_start_and_reads_its_stages(real_data_dir, tmp_path):
    from conftest import TINY, job_env

    env = job_env(tmp_path, real_data_dir, **(TINY | {"variants": "plain,bn_dropout", "train_limit": 256}))
    done = subprocess.run([PYTHON, "-m", "bench", "--worker", "job_run"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(result["accuracy"]) == set(result["stages"]) == {"plain", "bn_dropout"}
    assert result["seconds"] > result["inside_seconds"] > max(s["parity"] for s in result["stages"].values()) > 0
