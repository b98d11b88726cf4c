"""Re-export a saved checkpoint without retraining, or verify an ONNX file against the MNIST test set.

    lenet-export reexport RUN/models/plain/model.pt OUT_DIR   # every format, then the parity check
    lenet-export verify model.onnx                            # accuracy under onnxruntime, both ways
    lenet-export verify outputs --variant bn_dropout          # the published run's model, as lenet-predict takes it

Exit status: 0 ok, 2 bad arguments or a damaged or foreign model file, 3 data problem, 5 parity or accuracy
mismatch, 6 the output folder cannot be written.

This command line lives in the job, not in export/, because it rebuilds the job's model (job.training.model) and reads
MNIST (job.training.data): the export package knows nothing of training.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn

from lenet_client.environment import writable_cache_folder
from lenet_client.text import printable, tolerant_output

EXIT_BAD_ARGUMENT, EXIT_DATA, EXIT_PARITY, EXIT_OUTPUT = 2, 3, 5, 6


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_ARGUMENT, f"{self.prog}: {message} (see --help)\n")


def bounded(kind: type, low: float, high: float):
    """An argparse type: a `kind` number from `low` to `high`, else a one-line usage error."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not low <= value <= high:  # also refuses nan
            raise argparse.ArgumentTypeError(f"{text} is out of range (allowed: {low:g}-{high:g})")
        return value
    return parse


def reexport(checkpoint: Path, out_dir: Path, data_dir: Path, batch_size: int) -> int:
    from export.checks import describe, describe_failures
    from export.formats import export_model
    from export.parity import check_parity
    from job.training.data import load_mnist
    from job.training.model import load_trained

    model, metadata = load_trained(checkpoint)
    paths = export_model(model, out_dir, metadata)
    data = load_mnist(data_dir, download=False, normalize=float(metadata["preprocess.std"]) != 1.0)
    results = check_parity(model, paths, data.test.images, data.test.labels, batch_sizes=(1, batch_size),
                           max_abs_diff=1e-4, max_rel_diff=1e-5, min_agreement=1.0)
    for check in results:
        print(describe(check))
    failures = describe_failures(results)
    if failures:
        print(f"lenet-export: parity failed: {failures}", file=sys.stderr)
        return EXIT_PARITY
    print(f"exported to {out_dir}")
    return 0


def verify(onnx_path: Path, data_dir: Path, tolerance: float) -> int:
    from export.parity import logits_of, onnx_runner
    from job.training.data import ensure_mnist, read_split
    from lenet_client.contract import preprocessing
    from lenet_client.predict import load_model

    _, metadata = load_model(onnx_path)
    scale, mean, std = preprocessing(metadata)
    ensure_mnist(data_dir, download=False)
    images, labels = read_split(data_dir, train=False, limit=None)
    inputs = ((images.float() * scale - mean) / std).unsqueeze(1)
    predictions = {}
    for name, optimize in (("optimized", True), ("unoptimized", False)):
        predictions[name] = logits_of(onnx_runner(onnx_path, optimize), inputs, 1000).argmax(1)
        accuracy = int((predictions[name] == labels).sum()) / len(labels)
        print(f"onnxruntime {name}: test accuracy {100 * accuracy:.2f}% on {len(labels)} images")
    recorded = float(metadata.get("metrics.test_accuracy", "nan"))
    disagreements = int((predictions["optimized"] != predictions["unoptimized"]).sum())
    if disagreements or not abs(accuracy - recorded) <= tolerance:
        print(f"lenet-export: {onnx_path} fails: {disagreements} images differ with and without graph optimizations; "
              f"accuracy {accuracy:.4f} vs {recorded:.4f} recorded at training (tolerance {tolerance})",
              file=sys.stderr)
        return EXIT_PARITY
    print(f"{onnx_path}: ok, matches the recorded test accuracy {100 * recorded:.2f}%")
    return 0


def main(argv: list[str] | None = None) -> int:
    from job.outcome.metadata import project_version

    parser = OneLineParser(prog="lenet-export", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n")[2])
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="MNIST folder (default: data)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {project_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    again = commands.add_parser("reexport", help="write every format again from a state_dict checkpoint")
    again.add_argument("checkpoint", type=Path, help="model.pt, with its model.json beside it")
    again.add_argument("out_dir", type=Path, help="folder to write model.onnx, model.torchscript.pt and model.pt2 into")
    again.add_argument("--batch-size", type=bounded(int, 1, 10000), default=512,
                       help="the parity check's large batch, 1-10000 (default 512)")
    check = commands.add_parser("verify", help="test accuracy of an ONNX file, with and without optimizations")
    check.add_argument("model", type=Path, help="an ONNX file exported by this job, or a published run: an outputs "
                                                "folder, its latest.json, or a run folder (as lenet-predict takes)")
    check.add_argument("--variant", help="which model of a published run (default: the first it lists)")
    check.add_argument("--tolerance", type=bounded(float, 0, 1), default=0.0005,
                       help="largest accuracy difference from the recorded one (default 0.0005: 5 images)")
    args = parser.parse_args(argv)
    from job.training.data import DataError
    from job.training.model import CheckpointError
    from lenet_client.predict import PredictError, model_file

    try:
        if args.command == "reexport":
            return reexport(args.checkpoint, args.out_dir, args.data_dir, args.batch_size)
        return verify(model_file(args.model, args.variant), args.data_dir, args.tolerance)
    except DataError as error:
        print(f"lenet-export: data problem: {error}", file=sys.stderr)
        return EXIT_DATA
    except (PredictError, CheckpointError) as error:  # missing, damaged, or not an export of this job
        print(f"lenet-export: {error}", file=sys.stderr)
        return EXIT_BAD_ARGUMENT
    except OSError as error:  # the output folder cannot be written
        print(f"lenet-export: cannot write {printable(error.filename or '')}: {error.strerror or error}",
              file=sys.stderr)
        return EXIT_OUTPUT


def main_exit() -> None:
    writable_cache_folder()
    tolerant_output()
    sys.exit(main())


if __name__ == "__main__":
    main_exit()
