"""Where a run's CPU time goes, by stage of the job: py-spy's raw samples of every process, summed per stage.

    py-spy record --subprocesses -r 100 -f raw -o samples.txt -- python -m job
    .venv/bin/python -m bench.stages samples.txt 100

Each sample is a whole call stack; it counts for the first stage in STAGES whose rule matches it (the order
matters: the parity check's formats before the parity check as a whole).
"""

from __future__ import annotations

import collections
import sys

STAGES = [
    ("forkserver preload (imports)",
     lambda s: "forkserver.py" in s and "_find_and_load" in s and "_serve_one" not in s),
    ("parity: torch.export program", lambda s: "check_parity" in s and "call_wrapped" in s),
    ("parity: onnxruntime (2 sessions)", lambda s: "check_parity" in s and "onnx_runner.<locals>" in s),
    ("parity: eager reference", lambda s: "check_parity" in s and "LeNet.forward" in s),
    ("parity: TorchScript", lambda s: "check_parity" in s and "_wrapped_call_impl" in s),
    ("parity: loading the files", lambda s: "check_parity" in s and "format_runners" in s),
    ("parity: other", lambda s: "check_parity" in s),
    ("export: ONNX", lambda s: "export_onnx" in s),
    ("export: torch.export", lambda s: "export_model" in s and "torch/export" in s),
    ("export: TorchScript", lambda s: "export_model" in s and "jit" in s),
    ("export: other", lambda s: "export_model" in s),
    ("training + per-epoch evaluation", lambda s: "train_model" in s),
    ("model summary (torchinfo)", lambda s: "summary" in s and "variant.py" in s),
    ("worker: load + verify MNIST", lambda s: "load_mnist" in s and "variant_worker" in s),
    ("worker: other", lambda s: "variant_worker" in s or "_serve_one" in s),
    ("job: imports", lambda s: "_find_and_load" in s),
    ("job: load + verify MNIST", lambda s: "load_mnist" in s or "load_data" in s),
    ("job: plots", lambda s: "plots.py" in s),
    ("job: report, publish", lambda s: "finish" in s),
    ("job: waiting for workers (busy)", lambda s: "train_in_parallel" in s),
]

OTHER = "other (interpreter start/exit, gc, multiprocessing)"


def stage_of(stack: str) -> str:
    return next((name for name, matches in STAGES if matches(stack)), OTHER)


def seconds_by_stage(lines, rate: float) -> dict[str, float]:
    """py-spy raw lines (`frame;frame;... COUNT`) -> seconds per stage, largest first."""
    counts: collections.Counter[str] = collections.Counter()
    for line in lines:
        stack, _, count = line.rstrip().rpartition(" ")
        if count.isdigit():
            counts[stage_of(stack)] += int(count)
    return {name: count / rate for name, count in counts.most_common()}


def main() -> None:
    path, rate = sys.argv[1], float(sys.argv[2])
    with open(path) as lines:
        seconds = seconds_by_stage(lines, rate)
    total = sum(seconds.values())
    print(f"{'stage':<52} {'seconds':>8} {'share':>6}")
    for name, value in seconds.items():
        print(f"{name:<52} {value:8.2f} {100 * value / total:5.1f}%")
    print(f"{'CPU time sampled, all processes':<52} {total:8.2f}")


if __name__ == "__main__":
    main()
