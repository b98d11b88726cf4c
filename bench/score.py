"""Score a predictor's JSON output on pictures written by bench.families, family by family: any version of the
predictor (an older commit's, a port's) is measured the same way, through its own command line.

    .venv/bin/python -m bench.families PICTURES --held-out
    lenet-predict --json MODEL PICTURES/*/* > results.json     # each PICTURES/<family>/<digit>/ folder
    .venv/bin/python -m bench.score results.json [more.json ...]           # one column per file
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from bench.families import HELD_OUT, TUNING, slug


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


def cell(figures: tuple[float, int, int] | None) -> str:
    if figures is None:
        return "-"
    accuracy, refused, _ = figures
    return f"{accuracy:.1f} %" + (f" ({refused} refused)" if refused else "")


if __name__ == "__main__":
    main()
