#!/usr/bin/env bash
# Retraining with extra pictures, measured through the job (docs/results.md, issue 22): the default job, then the
# same with LENET_EXTRA_DATA (600 generated pictures of two tuning families) and the champion check, on one output
# folder; then 600 other pictures of those families, never trained on, read by lenet-predict with each published
# model. ~3 minutes on 2 cores.   Usage: bench/retrain_measure.sh [WORK_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/retrain-measure}
python=${PYTHON:-.venv/bin/python}
rm -rf "$work" && mkdir -p "$work"
"$python" - "$work" <<'PY'
import sys
from pathlib import Path
from bench.families import family_samples
for folder, seed in (("extra", 1), ("fresh", 3)):
    for family in ("bold marker", "low resolution, nearest"):
        for i, sample in enumerate(family_samples(family, 300, seed)):
            digit = Path(sys.argv[1]) / folder / str(sample.digit)
            digit.mkdir(parents=True, exist_ok=True)
            sample.image.save(digit / f"{family.replace(' ', '-').replace(',', '')}-{i}.png")
PY
predict() { for variant in plain bn_dropout; do
    "$python" -m lenet_client "$work/out" --variant "$variant" --json "$work"/fresh/? > "$work/$1-$variant.json" || true
done; }
LENET_OUTPUT_DIR="$work/out" "$python" -m job > "$work/without.log"
predict without
LENET_OUTPUT_DIR="$work/out" LENET_EXTRA_DATA="$work/extra" LENET_CHAMPION_CHECK=true LENET_CHAMPION_TOLERANCE=0.003 \
    "$python" -m job > "$work/with.log" || echo "the run with extra pictures exited $? (see $work/with.log)"
predict with
"$python" - "$work" <<'PY'
import json, sys
from pathlib import Path
from job.outcome.report import read_report
work = Path(sys.argv[1])
without, with_extra = sorted((read_report(p) for p in (work / "out").glob("runs/*/report.json")),
                             key=lambda r: r.started_at)
champion, extra = with_extra.champion, with_extra.extra_data
print(f"extra pictures: {sum(extra.train_pictures.values())} trained on (x{extra.repeats}), "
      f"{sum(extra.holdout_pictures.values())} held out, {len(extra.skipped)} left out; second run {with_extra.status}")
for variant in ("plain", "bn_dropout"):
    read = {}
    for tag in ("without", "with"):
        results = json.loads((work / f"{tag}-{variant}.json").read_text())["results"]
        read[tag] = sum(r.get("digit") == int(Path(r["path"]).parent.name) for r in results) / len(results)
    print(f"{variant}: holdout {100 * champion.published_holdout_accuracy[variant]:.2f}% -> "
          f"{100 * champion.new_holdout_accuracy[variant]:.2f}%; separate pictures {100 * read['without']:.2f}% -> "
          f"{100 * read['with']:.2f}%; MNIST test "
          f"{100 * [v.final_test_accuracy for v in without.variants if v.variant == variant][0]:.2f}% -> "
          f"{100 * [v.final_test_accuracy for v in with_extra.variants if v.variant == variant][0]:.2f}%")
PY
