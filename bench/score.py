"""Score a predictor's JSON output on pictures written by bench.families, family by family: any version of the
predictor (an older commit's, a port's) is measured the same way, through its own command line.

    .venv/bin/python -m bench.families PICTURES --held-out
    lenet-predict --json MODEL PICTURES/*/* > results.json     # each PICTURES/<family>/<digit>/ folder
    .venv/bin/python -m bench.score results.json [more.json ...]           # one column per file

Then, for each file, how far its confidence can be trusted on all those pictures together: the calibration error
(15 bins), the accuracy on the 80 % it is surest of, and the share it calls unsure with its accuracy on the rest.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path

from bench.families import HELD_OUT, TUNING, slug

BINS = 15  # as job.training.calibrate


def scores(path: Path) -> dict[str, tuple[float, int, int]]:
    """family folder -> (accuracy %, pictures refused, pictures) from one JSON document of lenet-predict."""
    by_family = defaultdict(list)
    for result in json.loads(path.read_text())["results"]:
        picture = Path(result["path"])
        by_family[picture.parts[-3]].append(result.get("digit") == int(picture.parts[-2]) if "error" not in result
                                            else None)
    return {family: (100 * sum(r is True for r in read) / len(read), sum(r is None for r in read), len(read))
            for family, read in by_family.items()}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.score", description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, nargs="+", help="lenet-predict --json outputs")
    args = parser.parse_args()
    columns = {path.stem: scores(path) for path in args.results}
    print("| family | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for group, families in (("tuning", TUNING), ("held out", HELD_OUT)):
        for family in families:
            cells = [found.get(slug(family)) for found in columns.values()]
            if any(cells):
                print(f"| {family} ({group}) | " + " | ".join(map(cell, cells)) + " |")
    print()
    print("| file | calibration error | right on the surest 80 % | unsure | right when sure |")
    print("|---|---|---|---|---|")
    for path in args.results:
        figures = confidence(path)
        if figures is None:
            print(f"| {path.stem} | - | - | - | - |")
            continue
        error, surest, unsure, sure = figures
        print(f"| {path.stem} | {error:.3f} | {surest:.1f} % | " + " | ".join(
            "-" if value is None else f"{value:.1f} %" for value in (unsure, sure)) + " |")


def confidence(path: Path) -> tuple[float, float, float | None, float | None] | None:
    """(calibration error, % right on the surest 80 %, % unsure, % right on the sure ones) over every picture read;
    the last two None for a predictor from before `unsure`, and None where no picture was read."""
    read = [(r["probability"], r.get("unsure"), r["digit"] == int(Path(r["path"]).parts[-2]))
            for r in json.loads(path.read_text())["results"] if "error" not in r]
    if not read:
        return None
    error = 0.0
    for index in range(BINS):
        members = [(p, right) for p, _, right in read if min(int(p * BINS), BINS - 1) == index]
        if members:
            gap = sum(p for p, _ in members) / len(members) - sum(right for _, right in members) / len(members)
            error += len(members) / len(read) * abs(gap)
    surest = sorted(read, key=lambda r: -r[0])[:max(1, math.ceil(0.8 * len(read)))]
    on_surest = 100 * sum(right for _, _, right in surest) / len(surest)
    if any(unsure is None for _, unsure, _ in read):
        return error, on_surest, None, None
    sure = [right for _, unsure, right in read if not unsure]
    return error, on_surest, 100 * (len(read) - len(sure)) / len(read), 100 * sum(sure) / len(sure) if sure else None


def cell(figures: tuple[float, int, int] | None) -> str:
    if figures is None:
        return "-"
    accuracy, refused, _ = figures
    return f"{accuracy:.1f} %" + (f" ({refused} refused)" if refused else "")


if __name__ == "__main__":
    main()
