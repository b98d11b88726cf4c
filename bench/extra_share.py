"""Choose LENET_EXTRA_SHARE on a validation split: how much of each epoch the extra pictures should be.

    .venv/bin/python -m bench.extra_share --variant plain --shares 0 0.05 0.1 0.2

The extra pictures stand in for what the apps collect: pictures of the tuning families the models read worst
(bench.families: "bold marker", "low resolution, nearest"), 300 per family, labelled. The model trains on the
first 55,000 MNIST training images plus those pictures at each share, with the default recipe; it is judged on
the last 5,000 training images (MNIST validation) and on fresh pictures of the same families drawn with another
seed (never the test set, never the held-out families).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from bench.families import family_samples
from job.settings import RECIPES
from job.training.data import MnistData, Split, load_mnist, to_split
from job.training.extra import load_extra, with_extra
from job.training.model import build_model
from job.training.train import evaluate, train_model
from lenet_client.preprocess import to_mnist

FAMILIES = ("bold marker", "low resolution, nearest")
VALIDATION = 5000


def write_folder(folder: Path, count: int, seed: int) -> None:
    for family in FAMILIES:
        for index, sample in enumerate(family_samples(family, count, seed)):
            (folder / str(sample.digit)).mkdir(parents=True, exist_ok=True)
            sample.image.save(folder / str(sample.digit) / f"{family.replace(' ', '-')}-{index}.png")


def family_split(count: int, seed: int, normalize: bool) -> Split:
    samples = [s for family in FAMILIES for s in family_samples(family, count, seed)]
    pixels = torch.from_numpy(np.stack([to_mnist(s.image) for s in samples]))
    return to_split(pixels, torch.tensor([s.digit for s in samples]), normalize)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.extra_share", description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="plain", choices=["plain", "bn_dropout"])
    parser.add_argument("--shares", type=float, nargs="+", default=[0, 0.05, 0.1, 0.2])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    args = parser.parse_args()
    recipe = RECIPES["default"]
    mnist = load_mnist(args.data_dir, download=False, normalize=recipe.normalize)
    train = Split(mnist.train.images[:-VALIDATION], mnist.train.labels[:-VALIDATION])
    validation = Split(mnist.train.images[-VALIDATION:], mnist.train.labels[-VALIDATION:])
    fresh = family_split(300, seed=2, normalize=recipe.normalize)
    with tempfile.TemporaryDirectory() as folder:
        write_folder(Path(folder) / "extra", 300, seed=1)
        extra = load_extra(Path(folder) / "extra", Path(folder) / "cache")
    # Every labelled picture trains here (the job holds 1 in 5 out; here the fresh pictures are the holdout).
    extra = type(extra)(np.concatenate([extra.train_images, extra.holdout_images]),
                        np.concatenate([extra.train_labels, extra.holdout_labels]),
                        extra.holdout_images[:0], extra.holdout_labels[:0], extra.version)
    base = MnistData(train, validation, "data_dir", args.data_dir, {})
    for share in args.shares:
        data, repeats = (base, 0) if share == 0 else with_extra(base, extra, share, recipe.normalize)
        torch.manual_seed(args.seed)
        model = build_model(args.variant, recipe.dropout)
        _, final = train_model(model, data.train, validation, recipe, device=torch.device("cpu"), seed=args.seed,
                               eval_batch_size=1000)
        on_fresh = evaluate(model, fresh, 1000)
        print(f"{args.variant} share {share:g} (x{repeats}, {len(extra.train_labels)} pictures): MNIST validation "
              f"{100 * final.accuracy:.2f}%, fresh family pictures {100 * on_fresh.accuracy:.2f}% of "
              f"{len(fresh)}", flush=True)


if __name__ == "__main__":
    main()
