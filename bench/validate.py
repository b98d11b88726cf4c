"""Compare recipe candidates on a validation split carved from the training set; the test set is not touched.

    .venv/bin/python -m bench.validate --seeds 0 1 2 --set batch_size=128 learning_rate=0.1

Trains on the first 55,000 training images and prints the accuracy on the last 5,000, per variant and seed.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch

from job.settings import RECIPES
from job.training.data import Split, load_mnist
from job.training.model import build_model
from job.training.train import train_model

VALIDATION = 5000


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.validate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="default", choices=sorted(RECIPES))
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="recipe fields to change")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=["plain", "bn_dropout"])
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    args = parser.parse_args()
    recipe = RECIPES[args.recipe]
    changes = dict(item.split("=", 1) for item in args.set)
    recipe = replace(recipe, **{k: type(getattr(recipe, k))(v) for k, v in changes.items()})
    data = load_mnist(args.data_dir, download=False, normalize=recipe.normalize)
    train = Split(data.train.images[:-VALIDATION], data.train.labels[:-VALIDATION])
    validation = Split(data.train.images[-VALIDATION:], data.train.labels[-VALIDATION:])
    print(recipe)
    for variant in args.variants:
        for seed in args.seeds:
            torch.manual_seed(seed)
            model = build_model(variant, recipe.dropout)
            _, final = train_model(model, train, validation, recipe, device=torch.device("cpu"), seed=seed,
                                   eval_batch_size=1000)
            print(f"{variant} seed {seed}: validation accuracy {100 * final.accuracy:.2f}%", flush=True)


if __name__ == "__main__":
    main()
