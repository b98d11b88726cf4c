"""Train the full job for several seeds and recipes, and print the table of docs/results.md.

    .venv/bin/python -m bench.seeds                       # recipes default and seed, seeds 0 1 2 (~15 min on 2 cores)
    .venv/bin/python -m bench.seeds --table DIR [DIR...]  # only print the table of runs already made

Each run is the real job (`python -m job`) with LENET_RECIPE and LENET_SEED set; the table shows the final
epoch's test accuracy, read from each run's report.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from job.outcome.report import read_report


def reports(output_dirs: list[Path]):
    for output_dir in output_dirs:
        for path in sorted(output_dir.glob("runs/*/report.json")):
            yield read_report(path)


def table(output_dirs: list[Path]) -> str:
    rows: dict[tuple[str, str], dict[int, float]] = {}
    for report in reports(output_dirs):
        for variant in report.variants:
            rows.setdefault((report.recipe["name"], variant.variant), {})[report.settings["seed"]] = \
                variant.final_test_accuracy
    seeds = sorted({seed for figures in rows.values() for seed in figures})
    lines = ["| recipe | variant | " + " | ".join(f"seed {s}" for s in seeds) + " | min | mean |",
             "|---|---|" + "---|" * (len(seeds) + 2)]
    for (recipe, variant), figures in sorted(rows.items()):
        values = [figures[s] for s in seeds if s in figures]
        lines.append(f"| {recipe} | {variant} | " + " | ".join(
            f"{100 * figures[s]:.2f} %" if s in figures else "" for s in seeds)
            + f" | {100 * min(values):.2f} % | {100 * sum(values) / len(values):.2f} % |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.seeds", description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", nargs="+", type=Path, help="print the table of these output dirs only")
    parser.add_argument("--out", type=Path, default=Path("outputs/seeds"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--recipes", nargs="+", default=["default", "seed"])
    args = parser.parse_args()
    if args.table:
        print(table(args.table))
        return
    dirs = []
    for recipe in args.recipes:
        for seed in args.seeds:
            output_dir = args.out / f"{recipe}-{seed}"
            env = dict(os.environ, LENET_RECIPE=recipe, LENET_SEED=str(seed), LENET_OUTPUT_DIR=str(output_dir),
                       LENET_MIN_TEST_ACCURACY="0")
            subprocess.run([sys.executable, "-m", "job"], env=env, check=True, stdout=subprocess.DEVNULL)
            dirs.append(output_dir)
            print(f"{recipe} seed {seed}: done", file=sys.stderr, flush=True)
    print(table(dirs))


if __name__ == "__main__":
    main()
