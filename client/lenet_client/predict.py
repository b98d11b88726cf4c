"""Recognize digits in picture files with a model this job exported: needs onnxruntime, numpy and Pillow only.

    lenet-predict MODEL PICTURE|FOLDER [...] [--variant NAME] [--json] [--sort-into DIR] [--min-confidence P]

MODEL is an ONNX file, or the published run: an outputs folder or its latest.json, or one run's folder; --variant
then picks the model (default: the first one latest.json lists, or in a run folder the first by name). Each picture
(PNG, JPEG, ... of one digit, any size) is turned into an MNIST-style 28x28 input by lenet_client.preprocess, then
scaled as the model's own metadata says. A folder stands for the pictures directly in it. The probabilities are
calibrated with the model's temperature (softmax(logits / T)); an answer below --min-confidence (default: the
model's calibration.min_confidence) is `unsure`, its digit still given. Prints one line per picture (path, digit,
probability, and `unsure` where it is), or with --json one JSON document: {"model": ..., "variant": ..., "results":
[{"path", "digit", "probability", "unsure", "top3"} or {"path", "error", "status"}, ...]}. With --sort-into DIR, each
picture read is also copied into DIR/<digit>/, an unsure one into DIR/unsure/ (lenet_client.sort: the
labelled-data layout of LENET_EXTRA_DATA; a person labels the unsure ones and corrects misread ones by moving them),
and each line ends with where its copy is.

Exit status: 0 every picture was read; 2 bad command line; 3 the model is missing, not ONNX, not an export of this
job, or damaged (tried on two pictures as it is loaded); 4 a picture is missing, not a picture, too large, or a
folder without pictures; 5 a picture holds no digit (no ink); 6 the results (a full disk) or the --sort-into folder
cannot be written. A failing picture gets one line on stderr and the others are still read; the exit status is that
of the first picture that failed.
"""

from __future__ import annotations

import argparse
import errno
import json
import sys
from pathlib import Path
from typing import Any, NoReturn, cast

import numpy as np
import onnxruntime as ort

from lenet_client import __version__
from lenet_client.contract import CLASS_LABELS, INPUT_NAME, OUTPUT_NAME, calibration, check_classes, preprocessing
from lenet_client.jsonfile import read_json
from lenet_client.pictures import PictureError, picture_paths
from lenet_client.preprocess import NoDigitError, model_input
from lenet_client.reading import mnist_pictures
from lenet_client.sort import sort_into
from lenet_client.text import complain, discard, printable

EXIT_OK, EXIT_USAGE, EXIT_MODEL, EXIT_PICTURE, EXIT_NO_DIGIT, EXIT_OUTPUT = 0, 2, 3, 4, 5, 6


class PredictError(Exception):
    """An expected failure: `status` is the exit status, the message one line that names the file."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


POINTER = "latest.json"  # what the job publishes: {"run_dir": ..., "models": {variant: {"onnx": path, ...}}}


def model_file(path: Path, variant: str | None) -> Path:
    """The ONNX file that MODEL names: the file itself, or a variant's model.onnx in a run folder, in the run that
    latest.json names, or in the run that an outputs folder's latest.json names."""
    if path.is_dir() and (path / POINTER).exists():
        path = path / POINTER
    if path.is_dir() and (path / "models").is_dir():
        variants = sorted(p.name for p in (path / "models").iterdir() if (p / "model.onnx").is_file())
        return chosen(path, variants, variant, lambda name: path / "models" / name / "model.onnx")
    if path.suffix == ".json" and path.exists():
        try:
            models = cast(dict[str, Any], read_json(path))["models"]  # any other shape: the errors below
            variants = [name for name, files in models.items() if "onnx" in files]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            reason = str(error) if type(error) is ValueError else type(error).__name__  # read_json's say why
            raise PredictError(EXIT_MODEL, f"{printable(path)}: not a published run's pointer ({reason}; "
                                           f"allowed: the latest.json the job writes)") from None
        return chosen(path, variants, variant, lambda name: path.parent / models[name]["onnx"])
    if variant is not None:
        raise PredictError(EXIT_USAGE, f"{printable(path)}: --variant needs a published run (an outputs folder, its "
                                       f"{POINTER}, or a run folder), not a model file")
    return path


def chosen(where: Path, variants: list[str], variant: str | None, file_of) -> Path:
    if not variants:
        raise PredictError(EXIT_MODEL, f"{printable(where)}: names no ONNX model")
    if variant is None:
        return file_of(variants[0])
    if variant not in variants:
        raise PredictError(EXIT_USAGE, f"--variant {variant}: not in {where} (allowed: {', '.join(variants)})")
    return file_of(variant)


def load_model(path: Path) -> tuple[ort.InferenceSession, dict[str, str]]:
    if not path.exists():
        raise PredictError(EXIT_MODEL, f"{printable(path)}: no such model file")
    if path.is_dir():
        raise PredictError(EXIT_MODEL, f"{printable(path)}: is a folder, not an ONNX model file")
    if not path.is_file():  # reading a pipe would wait for a writer forever
        raise PredictError(EXIT_MODEL, f"{printable(path)}: not a regular file (a pipe, a socket or a device; "
                                       f"allowed: an ONNX model file)")
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: onnxruntime's warnings would break the one-line promise
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own types for unreadable, invalid or non-ONNX files
        raise PredictError(EXIT_MODEL, f"{printable(path)}: not an ONNX model that onnxruntime can load "
                                       f"({one_line(error)})") from None
    metadata = dict(session.get_modelmeta().custom_metadata_map)
    try:
        preprocessing(metadata)
        calibration(metadata)
        check_classes(metadata)
    except ValueError as error:
        raise PredictError(EXIT_MODEL, f"{printable(path)}: {error}") from None
    problem = interface_problem(session)
    if problem:
        raise PredictError(EXIT_MODEL, f"{printable(path)}: {problem}: not an export of this job (allowed: input "
                                       f"{INPUT_NAME!r} float32 [N, 1, 28, 28], output {OUTPUT_NAME!r} float32 "
                                       f"[N, 10])")
    problem = behaviour_problem(session, metadata)
    if problem:
        raise PredictError(EXIT_MODEL, f"{printable(path)}: {problem}: not a model this job exported, or a damaged one")
    return session, metadata


def interface_problem(session: ort.InferenceSession) -> str | None:
    """What in the model's inputs and outputs differs from the contract's, or None. Checked before any picture is
    read, so that a plausible foreign model fails in one line rather than in onnxruntime."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if [i.name for i in inputs] != [INPUT_NAME]:
        return f"its inputs are {[i.name for i in inputs]}"
    if [o.name for o in outputs] != [OUTPUT_NAME]:
        return f"its outputs are {[o.name for o in outputs]}"
    tensor, logits = inputs[0], outputs[0]
    if tensor.type != "tensor(float)" or len(tensor.shape) != 4 or list(tensor.shape[1:]) != [1, 28, 28]:
        return f"its input is {tensor.type} {tensor.shape}"
    if logits.type != "tensor(float)" or len(logits.shape) != 2 or logits.shape[1] != len(CLASS_LABELS):
        return f"its output is {logits.type} {logits.shape}"
    return None


def behaviour_problem(session: ort.InferenceSession, metadata: dict[str, str]) -> str | None:
    """What the model does that the contract's cannot, or None: tried on two pictures (an empty field, a full one),
    twice, before any picture is read. A model can have the contract's names and shapes and still take no batch
    (a fixed batch size), carry a NaN weight, or answer the same picture differently each time (dropout exported
    in training mode). (An output shape other than the declared one is refused by interface_problem: onnxruntime
    reports what its shape inference finds.)"""
    probes = model_input(np.stack([np.zeros((1, 28, 28), np.uint8), np.full((1, 28, 28), 255, np.uint8)]),
                         *preprocessing(metadata))
    try:
        first, second = (session.run([OUTPUT_NAME], {INPUT_NAME: probes})[0] for _ in range(2))
    except Exception as error:  # onnxruntime's own types: a fixed batch size, a graph that fails when run
        return f"cannot be run on a batch of 2 pictures ({one_line(error)})"
    if not np.isfinite(first).all():
        return "gives NaN or infinite logits"
    if not np.allclose(first, second, rtol=1e-4, atol=1e-4):  # CPU runs repeat exactly; dropout moves them by units
        return "answers the same picture differently each time (dropout left in training mode?)"
    return None


def one_line(error: Exception) -> str:
    """The first line of an exception's message (onnxruntime's run many), or its type's name."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def classify(session: ort.InferenceSession, metadata: dict[str, str], paths: list[Path],
             min_confidence: float | None = None, every_core: bool = False) -> list[dict]:
    """One result per picture: {"path", "digit", "probability", "unsure", "top3"}, or {"path", "error", "status"}.
    The probabilities are calibrated; `min_confidence` (default: the model's) decides `unsure`. `every_core`: many
    pictures may be read by a pool of processes (lenet_client.reading), as lenet-predict does; an app that imports
    this module decides that itself (its main module is imported again in each new process)."""
    scale, mean, std = preprocessing(metadata)
    temperature, model_min_confidence = calibration(metadata)
    threshold = model_min_confidence if min_confidence is None else min_confidence
    results: list[dict[str, Any]] = []
    digits: list[np.ndarray] = []  # the 28x28 of each picture read
    paths = picture_paths(paths)
    for path, reading in zip(paths, mnist_pictures(paths, every_core=every_core), strict=True):
        if isinstance(reading, PictureError):
            results.append({"path": str(path), "error": str(reading), "status": EXIT_PICTURE})
        elif isinstance(reading, NoDigitError):
            results.append({"path": str(path), "error": f"{printable(path)}: {reading}", "status": EXIT_NO_DIGIT})
        else:
            digits.append(reading)
            results.append({"path": str(path)})
    if digits:
        inputs = model_input(np.stack(digits)[:, None], scale, mean, std)
        logits = session.run([OUTPUT_NAME], {INPUT_NAME: inputs})[0]
        if not np.isfinite(logits).all():  # a damaged weight (NaN, infinity) spreads to every answer
            raise PredictError(EXIT_MODEL, "gives NaN or infinite logits: a damaged model, not what the job exported")
        # In float64: a sure answer's float32 probability rounds to 1.0, above any --min-confidence.
        probabilities = iter(softmax(logits.astype(np.float64) / temperature))
        for result in (r for r in results if "error" not in r):
            p = next(probabilities)
            top = np.argsort(-p, kind="stable")[:3]
            result.update(digit=int(top[0]), probability=float(p[top[0]]), unsure=bool(p[top[0]] < threshold),
                          top3=[{"digit": int(d), "probability": float(p[d])} for d in top])
    return results


def confidence(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value <= 1:  # NaN too
        raise argparse.ArgumentTypeError(f"{text!r} is not a probability (allowed: a number 0-1)")
    return value


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see --help)\n")


def main(argv: list[str] | None = None, every_core: bool = False) -> int:
    """The command line; `every_core` as for classify (the `lenet-predict` command sets it)."""
    parser = OneLineParser(prog="lenet-predict", description=__doc__.split("\n\n")[0],
                           epilog="exit status: 0 ok, 2 bad command line, 3 model problem, 4 picture unreadable, "
                                  "5 no digit in a picture, 6 the results or the --sort-into folder cannot be "
                                  "written")
    parser.add_argument("model", type=Path, help="an ONNX file exported by this job, or a published run: an outputs "
                                                 "folder, its latest.json, or a run folder")
    parser.add_argument("pictures", type=Path, nargs="+", help="picture files (one digit each, any size) or folders")
    parser.add_argument("--variant", help="which model of a published run (default: the first it lists)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of lines")
    parser.add_argument("--sort-into", type=Path, metavar="DIR",
                        help="also copy each picture read into DIR/<digit>/, or DIR/unsure/ (labelled data for "
                             "retraining)")
    parser.add_argument("--min-confidence", type=confidence, metavar="P",
                        help="below this calibrated probability an answer is unsure (0-1; default: the model's "
                             "calibration.min_confidence)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    args = parser.parse_args(argv)
    try:
        model = model_file(args.model, args.variant)
        session, metadata = load_model(model)
    except PredictError as error:
        complain(f"lenet-predict: {error}")
        return error.status
    try:
        results = classify(session, metadata, args.pictures, args.min_confidence, every_core)
    except PredictError as error:
        complain(f"lenet-predict: {printable(model)}: {error}")
        return error.status
    failures = [r for r in results if "error" in r]
    for failure in failures:
        complain(f"lenet-predict: {failure['error']}")
    if args.sort_into is not None:
        try:
            sort_into(results, args.sort_into)
        except OSError as error:
            complain(f"lenet-predict: --sort-into {printable(args.sort_into)}: cannot copy the pictures there "
                  f"({error.strerror or error}: {printable(error.filename or args.sort_into)})")
            return EXIT_OUTPUT
        not_copied = [r for r in results if "sort_error" in r]
        for result in not_copied:
            complain(f"lenet-predict: {result['sort_error']}")
        failures += [{"status": EXIT_OUTPUT}] if not_copied else []
    if not write_results(results, model, metadata, args.json):
        return EXIT_OUTPUT
    return failures[0]["status"] if failures else EXIT_OK


def write_results(results: list[dict], model: Path, metadata: dict[str, str], as_json: bool) -> bool:
    """The results on standard output, as one JSON document or a line each; False when they could not be written
    (said in one line on stderr). A reader that went away is not a failure."""
    if sys.stdout is None:  # started with standard output closed (`>&-`): print() would drop every result silently
        complain("lenet-predict: cannot write the results: standard output is closed")
        return False
    try:
        if as_json:
            print(json.dumps({"model": utf8_or_printable(str(model)), "variant": metadata.get("model.variant"),
                              "results": [{key: utf8_or_printable(value) for key, value in result.items()}
                                          for result in results]}, indent=2, allow_nan=False), flush=True)
        else:
            for result in results:
                if "error" not in result:
                    unsure = "\tunsure" if result["unsure"] else ""
                    copy = f"\t{printable(result['sorted_into'])}" if "sorted_into" in result else ""
                    print(f"{printable(result['path'])}\t{result['digit']}\t{result['probability']:.4f}{unsure}{copy}",
                          flush=True)
    except OSError as error:
        discard(sys.stdout)
        if not reader_went_away(error):  # a full disk, a quota: the results are lost, and the status must say so
            complain(f"lenet-predict: cannot write the results: {error.strerror or error}")
            return False
    return True


def utf8_or_printable(value: object) -> object:
    """A path named in another encoding (an old PC's Latin-1) as printable() shows it, Python's quoted form that
    gives its bytes back: JSON holds only Unicode, and a lone surrogate would reach a reader as U+FFFD."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return printable(value)
    return value


def reader_went_away(error: OSError) -> bool:
    """A reader that stopped early (`| head`) or a terminal that hung up: what it did not read, it did not want,
    and the pictures' outcome stands."""
    return isinstance(error, BrokenPipeError) or error.errno == errno.EPIPE or (
        error.errno == errno.EIO and sys.stdout.isatty())
