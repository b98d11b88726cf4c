"""The parity check of a run's models, piece by piece: each format at batch 1 and at the large batch, timed alone.

    .venv/bin/python -m bench.parity RUN_DIR [--data-dir data] [--batch 512] [--test-limit N]

One thread, as each variant's worker has when the variants train side by side. The reference is the eager model
at the large batch, as in export.parity.check_parity.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import torch

from export.formats import FILES
from export.parity import Runner, format_runners, logits_of
from job.training.data import ensure_mnist, read_split, to_split
from job.training.model import load_trained


def positive(text: str) -> int:
    if not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.parity", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--test-limit", type=positive, default=None,
                        help="the first N test images (default: all 10,000)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated")
    torch.set_num_threads(1)
    ensure_mnist(args.data_dir, download=False)
    raw_images, labels = read_split(args.data_dir, train=False, limit=args.test_limit)
    print(f"{'variant':<11} {'runner':<30} {'batch 1':>8} {'batch ' + str(args.batch):>10}")
    for model_dir in sorted((args.run_dir / "models").iterdir()):
        model, metadata = load_trained(model_dir / "model.pt")
        images = to_split(raw_images, labels, normalize=float(metadata["preprocess.std"]) != 1.0).images
        started = time.perf_counter()
        runners = format_runners({name: model_dir / file for name, file in FILES.items()})
        total = loading = time.perf_counter() - started
        every: dict[str, Runner] = {"eager (reference)": model, **runners}
        for name, run in every.items():
            shown = []
            for batch_size in (1, args.batch):
                if name.startswith("eager") and batch_size == 1:
                    shown.append("-")
                    continue
                logits_of(run, images[:64], min(batch_size, 64))  # warm-up
                started = time.perf_counter()
                logits_of(run, images, batch_size)
                seconds = time.perf_counter() - started
                total += seconds
                shown.append(f"{seconds:.3g}")  # 3 figures: a fast runner on a few images is not 0.00
            print(f"{model_dir.name:<11} {name:<30} {shown[0]:>8} {shown[1]:>10}")
        print(f"{model_dir.name:<11} {'loading the 3 files':<30} {loading:8.2f}")
        print(f"{model_dir.name:<11} {'total':<30} {total:8.2f}", flush=True)


if __name__ == "__main__":
    main()
