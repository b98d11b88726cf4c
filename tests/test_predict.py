"""The torch-free client (lenet_client), on digits from the real test set drawn as image files."""

import ast
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from conftest import ROOT, foreign_model, seven
from export.formats import export_model
from job.settings import RECIPES
from job.training.data import load_mnist
from job.training.model import build_model
from job.training.train import train_model


@pytest.fixture(scope="module")
def small_trained_onnx(real_data_dir, tmp_path_factory):
    """A plain LeNet trained for 2 epochs on 20,000 real images: enough to read clean digits."""
    recipe = replace(RECIPES["default"], epochs=2, batch_size=64, learning_rate=0.05)
    data = load_mnist(real_data_dir, download=False, normalize=True, train_limit=20000, test_limit=1000)
    torch.manual_seed(0)
    model = build_model("plain", recipe.dropout)
    _, final = train_model(model, data.train, data.test, recipe, device=torch.device("cpu"), seed=0,
                           eval_batch_size=1000)
    assert final.accuracy > 0.95, "the fixture's model must read clean digits before the CLI is judged on them"
    metadata = {"model.variant": "plain", "preprocess.scale": repr(1 / 255), "preprocess.mean": "0.1307",
                "preprocess.std": "0.3081"}
    paths = export_model(model.eval(), tmp_path_factory.mktemp("model"), metadata)
    raw = load_mnist(real_data_dir, download=False, normalize=False, test_limit=1000).test
    return paths["onnx"], raw


def test_predicts_digits_drawn_both_ways_and_at_other_sizes(small_trained_onnx, tmp_path):
    onnx_path, test = small_trained_onnx
    files, expected = [], []
    for i in range(12):
        pixels = (test.images[i, 0].numpy() * 255).round().astype(np.uint8)
        image = Image.fromarray(pixels)
        if i % 2:  # a scan: dark digit on light paper, larger, in colour, as JPEG
            image = Image.fromarray(255 - pixels).resize((112, 112)).convert("RGB")
            path = tmp_path / f"digit{i}.jpg"
            image.save(path, quality=95)
        else:
            path = tmp_path / f"digit{i}.png"
            image.save(path)
        files.append(str(path))
        expected.append(int(test.labels[i]))
    done = subprocess.run([sys.executable, "-m", "lenet_client", str(onnx_path), *files], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = [line.split("\t") for line in done.stdout.splitlines()]
    assert [row[0] for row in rows] == files
    predicted = [int(row[1]) for row in rows]
    assert sum(p == e for p, e in zip(predicted, expected, strict=True)) >= 11, (predicted, expected)
    # A model that reads clean test digits right is sure of them: the printed probability is its confidence.
    assert sorted(float(row[2]) for row in rows)[len(rows) // 2] >= 0.9, rows


def predict_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lenet_client", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_a_seven_small_in_a_corner_and_one_edge_to_edge_are_read_as_7(small_trained_onnx, tmp_path):
    onnx_path, _ = small_trained_onnx
    corner, edge = tmp_path / "corner.png", tmp_path / "edge.png"
    seven((200, 200), (10, 12, 45, 60), 4, mode="RGB").save(corner)
    seven((200, 200), (0, 3, 199, 197), 12, mode="RGB").save(edge)
    done = predict_cli(onnx_path, corner, edge, "--json")
    assert done.returncode == 0, done.stderr
    assert [r["digit"] for r in json.loads(done.stdout)["results"]] == [7, 7]


def test_json_output_for_a_folder_and_single_files(small_trained_onnx, tmp_path):
    onnx_path, test = small_trained_onnx
    folder = tmp_path / "scans"
    folder.mkdir()
    for i in range(5):
        Image.fromarray(255 - (test.images[i, 0].numpy() * 255).round().astype(np.uint8)).resize((84, 84)).save(
            folder / f"{i}.png")
    (folder / "notes.txt").write_text("not a picture, and not named like one: skipped")
    done = predict_cli(onnx_path, folder, folder / "0.png", "--json")
    assert done.returncode == 0 and done.stderr == ""
    document = json.loads(done.stdout)
    assert document["model"] == str(onnx_path) and document["variant"] == "plain"
    results = document["results"]
    assert [r["path"] for r in results] == [str(folder / f"{i}.png") for i in range(5)] + [str(folder / "0.png")]
    for result in results:
        top3 = result["top3"]
        assert result["digit"] == top3[0]["digit"] and result["probability"] == top3[0]["probability"]
        assert len({t["digit"] for t in top3}) == 3 and sum(t["probability"] for t in top3) <= 1 + 1e-6
        assert [t["probability"] for t in top3] == sorted((t["probability"] for t in top3), reverse=True)
    assert sum(r["digit"] == int(test.labels[i]) for i, r in enumerate(results[:5])) >= 4


def onnx_without_metadata(path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["logits"])], "other",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 10])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])])
    onnx.save(helper.make_model(graph), str(path))
    return path


def bad_model(kind, tmp_path):
    return {"missing": lambda: tmp_path / "nowhere.onnx",
            "a folder": lambda: tmp_path,
            "not onnx": lambda: (tmp_path / "model.onnx").write_text("hello") and tmp_path / "model.onnx",
            "onnx of another job": lambda: onnx_without_metadata(tmp_path / "other.onnx"),
            "a pipe": lambda: os.mkfifo(tmp_path / "model.onnx") or tmp_path / "model.onnx"}[kind]()


@pytest.mark.parametrize("kind, message", [("missing", "no such model file"), ("a folder", "is a folder"),
                                           ("not onnx", "not an ONNX model"),
                                           ("onnx of another job", "not an export of this job"),
                                           ("a pipe", "not a regular file")])  # reading it waited forever
def test_a_bad_model_is_one_line_and_exit_3(kind, message, tmp_path):
    picture = tmp_path / "digit.png"
    seven((50, 50), (10, 10, 40, 40), 3, mode="RGB").save(picture)
    done = predict_cli(bad_model(kind, tmp_path), picture)
    assert done.returncode == 3, done.stderr
    assert done.stderr.startswith("lenet-predict: ") and done.stderr.count("\n") == 1 and message in done.stderr


def bad_picture(kind, tmp_path):
    path = tmp_path / f"{kind.replace(' ', '_')}.png"
    if kind == "not a picture":
        path.write_text("not a picture")
    elif kind == "truncated":
        seven((200, 200), (20, 20, 180, 180), 9, mode="RGB").save(path)
        path.write_bytes(path.read_bytes()[:300])
    elif kind == "a folder without pictures":
        path.mkdir()
    elif kind == "too large":  # 8000 x 6000: refused from its header, before 48 MP are decoded
        Image.new("1", (8000, 6000), 1).save(path)
    elif kind == "blank":
        Image.new("RGB", (120, 90), "white").save(path)
    elif kind == "too small":
        Image.new("L", (6, 6), 0).save(path)
    elif kind == "a pipe":  # reading it waited for a writer forever
        os.mkfifo(path)
    return path


@pytest.mark.parametrize("kind, status, message", [
    ("missing", 4, "no such file"), ("not a picture", 4, "not a picture"), ("truncated", 4, "cannot be read"),
    ("a folder without pictures", 4, "a folder with no pictures"), ("too large", 4, "too large"),
    ("blank", 5, "no ink"), ("too small", 5, "too small"), ("a pipe", 4, "not a regular file")])
def test_a_bad_picture_is_one_line_with_its_status_and_the_others_are_still_read(small_trained_onnx, tmp_path,
                                                                                kind, status, message):
    onnx_path, _ = small_trained_onnx
    good = tmp_path / "good.png"
    seven((200, 200), (60, 40, 140, 160), 9, mode="RGB").save(good)
    done = predict_cli(onnx_path, bad_picture(kind, tmp_path), good, "--json")
    assert done.returncode == status, done.stderr
    assert done.stderr.startswith("lenet-predict: ") and done.stderr.count("\n") == 1 and message in done.stderr
    assert "Traceback" not in done.stderr
    bad, read = json.loads(done.stdout)["results"]
    assert bad["status"] == status and message in bad["error"] and read["digit"] == 7


def test_a_bad_command_line_is_one_line_and_exit_2():
    done = predict_cli()
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "see --help" in done.stderr


def test_a_reader_that_closes_stdout_early_changes_nothing(small_trained_onnx, tmp_path):
    """`lenet-predict model.onnx scans/ --json | head -1`: no traceback, the pictures' own status."""
    onnx_path, _ = small_trained_onnx
    picture = tmp_path / "seven.png"
    seven(mode="RGB").save(picture)
    process = subprocess.Popen([sys.executable, "-m", "lenet_client", str(onnx_path), str(picture), "--json"],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()
    assert process.wait(timeout=120) == 0
    assert process.stderr.read() == b""


@pytest.fixture
def published_layout(small_trained_onnx, tmp_path):
    """The layout the job publishes, with the fixture's model as both variants (files are what matter here)."""
    onnx_path, _ = small_trained_onnx
    outputs = tmp_path / "outputs"
    for variant in ("plain", "bn_dropout"):
        folder = outputs / "runs" / "r1" / "models" / variant
        folder.mkdir(parents=True)
        (folder / "model.onnx").write_bytes(onnx_path.read_bytes())
    (outputs / "latest.json").write_text(json.dumps({"run_id": "r1", "run_dir": "runs/r1", "models": {
        variant: {"onnx": f"runs/r1/models/{variant}/model.onnx"} for variant in ("bn_dropout", "plain")}}))
    picture = tmp_path / "seven.png"
    seven(mode="RGB").save(picture)
    return outputs, picture


@pytest.mark.parametrize("model, variant, expected", [
    ("outputs", [], "runs/r1/models/bn_dropout/model.onnx"),  # the first that latest.json lists
    ("outputs", ["--variant", "plain"], "runs/r1/models/plain/model.onnx"),
    ("outputs/latest.json", ["--variant", "plain"], "runs/r1/models/plain/model.onnx"),
    ("outputs/runs/r1", [], "runs/r1/models/bn_dropout/model.onnx"),  # a run folder: the first by name
    ("outputs/runs/r1", ["--variant", "plain"], "runs/r1/models/plain/model.onnx")])
def test_the_published_run_is_a_model_argument(published_layout, model, variant, expected):
    outputs, picture = published_layout
    done = predict_cli(outputs.parent / model, picture, "--json", *variant)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert Path(document["model"]).resolve() == (outputs / expected).resolve()
    assert document["results"][0]["digit"] == 7


@pytest.mark.parametrize("model, variant, status, message", [
    ("outputs", ["--variant", "lenet9"], 2, "--variant lenet9: not in"),
    ("outputs/runs/r1/models/plain/model.onnx", ["--variant", "plain"], 2, "--variant needs a published run"),
    ("outputs/broken.json", [], 3, "not a published run's pointer"),
    ("outputs/deep.json", [], 3, "nested too deeply"),  # was a RecursionError traceback, exit 1
    ("outputs/pipe.json", [], 3, "not a regular file"),
    ("outputs/folder.json", [], 3, "not a regular file"),
    ("pipe-outputs", [], 3, "latest.json: not a published run's pointer (not a regular file"),  # was: "is a folder"
    ])
def test_a_wrong_variant_or_pointer_is_one_line(published_layout, model, variant, status, message):
    outputs, picture = published_layout
    (outputs / "broken.json").write_text('{"models": 3}')
    (outputs / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    os.mkfifo(outputs / "pipe.json")
    (outputs / "folder.json").mkdir()
    (outputs.parent / "pipe-outputs").mkdir()
    os.mkfifo(outputs.parent / "pipe-outputs" / "latest.json")
    done = predict_cli(outputs.parent / model, picture, *variant)
    assert done.returncode == status and done.stderr.count("\n") == 1 and message in done.stderr, done.stderr


def test_a_bold_tight_crop_and_low_resolution_sevens_are_read(small_trained_onnx, tmp_path):
    """The kinds real handwriting brought: a bold digit cropped so that it touches all four edges (no refusal, no
    inverted polarity), and a 7 scanned 10 pixels high, enlarged blockily and blurred."""
    from test_preprocess import bold_zero, low_resolution

    onnx_path, _ = small_trained_onnx
    sharp = seven(size=(112, 112), box=(30, 14, 82, 98), width=10)
    pictures = {"bold_zero.png": bold_zero(), "nearest.png": low_resolution(sharp, 10, Image.Resampling.NEAREST),
                "bilinear.png": low_resolution(sharp, 10, Image.Resampling.BILINEAR)}
    for name, picture in pictures.items():
        picture.save(tmp_path / name)
    done = predict_cli(onnx_path, *(tmp_path / name for name in pictures), "--json")
    assert done.returncode == 0, done.stderr
    assert [r["digit"] for r in json.loads(done.stdout)["results"]] == [0, 7, 7]


@pytest.mark.parametrize("change, message", [
    ({"input_name": "pixels"}, "its inputs are ['pixels']"),
    ({"output_name": "probs"}, "its outputs are ['probs']"),
    ({"input_shape": ("N", 784), "output_shape": ("N", 10)}, "its input is tensor(float) ['N', 784]"),
    ({"input_type": 11}, "its input is tensor(double)"),  # float64
    ({"output_shape": ("N", 10, 1)}, "its output is tensor(float)"),
    ({"metadata": {"preprocess.scale": "0.0039", "preprocess.mean": "0", "preprocess.std": "0"}},
     "preprocess.std='0' (allowed: a finite number, above 0)"),
    ({"metadata": {"preprocess.scale": "nan", "preprocess.mean": "0", "preprocess.std": "1"}},
     "preprocess.scale='nan'"),
    ({"input_shape": (1, 1, 28, 28), "output_shape": (1, 10)}, "cannot be run on a batch of 2 pictures"),
    ({"outputs": 12}, "its output is tensor(float) ['N', None]"),  # 12 logits where the model says 10
    ({"noise": True}, "answers the same picture differently each time"),
    ({"metadata": {"preprocess.scale": "1", "preprocess.mean": "0", "preprocess.std": "1",
                   "model.classes": "9,8,7,6,5,4,3,2,1,0"}}, "model.classes='9,8,7,6,5,4,3,2,1,0' (allowed: "),
], ids=["input name", "output name", "input rank", "input dtype", "output rank", "std 0", "scale nan", "fixed batch",
        "12 logits", "random", "labels reversed"])
def test_a_plausible_foreign_model_is_refused_in_one_line_before_any_picture(change, message, tmp_path):
    picture = tmp_path / "digit.png"
    seven((50, 50), (10, 10, 40, 40), 3, mode="RGB").save(picture)
    done = predict_cli(foreign_model(tmp_path / "foreign.onnx", **change), picture)
    assert done.returncode == 3 and done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_a_long_strip_is_refused_from_its_header_and_the_other_pictures_are_read(small_trained_onnx, tmp_path):
    """8 x 4,000,000 pixels is 31 KB as a PNG and passes the 40-megapixel bound: each side is bounded too."""
    onnx_path, _ = small_trained_onnx
    strip, good = tmp_path / "strip.png", tmp_path / "good.png"
    Image.new("L", (4_000_000, 8), 255).save(strip)
    seven((200, 200), (60, 40, 140, 160), 9, mode="RGB").save(good)
    done = predict_cli(onnx_path, strip, good, "--json")
    assert done.returncode == 4 and done.stderr.count("\n") == 1 and "each side up to 20,000" in done.stderr
    bad, read = json.loads(done.stdout)["results"]
    assert bad["status"] == 4 and read["digit"] == 7


def test_file_names_in_any_bytes_keep_one_line_each_on_any_terminal(small_trained_onnx, tmp_path):
    model, _ = small_trained_onnx
    """Names that are not UTF-8, or hold a newline or a tab, and a terminal that only speaks ASCII: one row per
    picture, one line per error, no traceback; the JSON is strict and gives each name's bytes back."""
    folder = tmp_path / "pictures"
    folder.mkdir()
    seven_png = tmp_path / "seven.png"
    seven().save(seven_png)
    names = [b"caf\xe9.png", b"\xff\xfe.png", "café.png".encode(), b"new\nline.png", b"tab\there.png"]
    for name in names:
        (folder / os.fsdecode(name)).write_bytes(seven_png.read_bytes())
    (folder / os.fsdecode(b"bad\nname\xff.png")).write_bytes(b"not a picture")
    env = dict(os.environ, PYTHONIOENCODING="ascii")
    done = subprocess.run([sys.executable, "-m", "lenet_client", str(model), str(folder)], env=env,
                          capture_output=True, text=True, errors="surrogateescape", timeout=120)
    assert done.returncode == 4 and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and "not a picture that Pillow can read" in done.stderr
    rows = done.stdout.splitlines()
    assert len(rows) == len(names) and all(len(row.split("\t")) == 3 and row.split("\t")[1].isdigit()
                                           for row in rows), rows
    as_json = subprocess.run([sys.executable, "-m", "lenet_client", "--json", str(model), str(folder)],
                             env=env, capture_output=True, text=True, timeout=120)
    paths = [r["path"] for r in json.loads(as_json.stdout)["results"] if "digit" in r]
    for path in paths:  # strict: no lone surrogate (escaped in the JSON), which a reader such as jq would garble
        path.encode("utf-8")
    # A name in another encoding comes as Python's quoted form of it (as the job's report and log lines give it).
    read = {os.fsencode(Path(ast.literal_eval(p) if p.startswith(("'", '"')) else p).name) for p in paths}
    assert read == set(names)


def test_sort_into_copies_each_picture_once_into_its_digit_folder_and_never_undoes_a_correction(small_trained_onnx,
                                                                                                  tmp_path):
    model, _ = small_trained_onnx
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    seven().save(pictures / "a.png")
    seven(box=(40, 30, 150, 170), width=14).save(pictures / "b.png")
    (pictures / "c.png").write_bytes((pictures / "a.png").read_bytes())  # the same picture twice
    (pictures / "junk.png").write_bytes(b"not a picture")
    sorted_dir = tmp_path / "sorted"

    def sort(*paths):
        done = subprocess.run([sys.executable, "-m", "lenet_client", "--json", str(model), *map(str, paths),
                               "--sort-into", str(sorted_dir)], capture_output=True, text=True, timeout=120)
        return done, {Path(r["path"]).name: r for r in json.loads(done.stdout)["results"]} if done.stdout else {}

    done, results = sort(pictures)
    assert done.returncode == 4 and done.stderr.count("\n") == 1 and "junk.png" in done.stderr
    copies = sorted(p for p in sorted_dir.rglob("*") if p.is_file())
    assert len(copies) == 2 and {p.read_bytes() for p in copies} == {(pictures / f"{n}.png").read_bytes() for n in "ab"}
    for name in ("a.png", "b.png"):
        assert Path(results[name]["sorted_into"]).parent.name == str(results[name]["digit"])
    assert results["c.png"]["sorted_into"] == results["a.png"]["sorted_into"] and results["c.png"]["already_sorted"]
    assert "sorted_into" not in results["junk.png"]

    # A person corrects a label by moving the copy; sorting again adds nothing and keeps the correction.
    wrong = Path(results["b.png"]["sorted_into"])
    corrected = sorted_dir / "1" / wrong.name
    corrected.parent.mkdir(exist_ok=True)
    wrong.rename(corrected)
    done, results = sort(pictures / "a.png", pictures / "b.png")
    assert done.returncode == 0
    assert results["b.png"]["sorted_into"] == str(corrected) and results["b.png"]["already_sorted"]
    assert len([p for p in sorted_dir.rglob("*") if p.is_file()]) == 2

    # Another picture under a name already taken in its digit's folder keeps its name with its hash added.
    a_copy = Path(results["a.png"]["sorted_into"])
    other = tmp_path / "other" / "a.png"
    other.parent.mkdir()
    seven(box=(50, 50, 120, 150), width=7).save(other)
    done, results = sort(other)
    target = Path(results["a.png"]["sorted_into"])
    assert done.returncode == 0 and target.read_bytes() == other.read_bytes() and a_copy.exists()
    assert target.name.startswith("a-") if target.parent == a_copy.parent else target.name == "a.png"
    assert len([p for p in sorted_dir.rglob("*") if p.is_file()]) == 3


def test_a_folder_of_the_pictures_phones_browsers_and_scanners_save_is_read(small_trained_onnx, tmp_path):
    """A folder of .jfif (a JPEG as Windows browsers save it), .avif, scanner .pgm / .ppm pictures was "a folder with
    no pictures", and LENET_EXTRA_DATA left each out as "not a picture file", though Pillow reads them all. An
    iPhone's HEIC, which it cannot read without a plugin, was passed over in silence: now it is named."""
    model, _ = small_trained_onnx
    formats = {".jfif": "JPEG", ".jpe": "JPEG", ".avif": "AVIF", ".pgm": "PPM", ".ppm": "PPM", ".jp2": "JPEG2000",
               ".webp": "WEBP"}
    for suffix, kind in formats.items():
        seven(mode="L" if suffix == ".pgm" else "RGB").save(tmp_path / f"seven{suffix}", kind)
    (tmp_path / "IMG_0001.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(200))  # its header, no plugin
    done = predict_cli(model, tmp_path, "--json")
    results = {Path(r["path"]).name: r for r in json.loads(done.stdout)["results"]}
    assert set(results) == {f"seven{suffix}" for suffix in formats} | {"IMG_0001.HEIC"}
    assert all(results[f"seven{suffix}"]["digit"] == 7 for suffix in formats)
    assert done.returncode == 4 and done.stderr.count("\n") == 1
    assert "IMG_0001.HEIC: not a picture that Pillow can read (HEIC, an iPhone camera's format" in done.stderr


def test_two_sorts_at_once_never_replace_each_others_pictures(tmp_path, monkeypatch):
    """Two runs sorting different pictures of one name (IMG_0001.jpg from two phones) into the same digit's
    folder: the other run's copy lands just after this one found the name free. The rename then replaced it:
    a labelled picture lost."""
    import lenet_client.atomic
    from lenet_client.sort import sort_into

    mine, theirs = tmp_path / "mine" / "IMG_0001.png", tmp_path / "theirs" / "IMG_0001.png"
    for path, box in ((mine, (60, 40, 140, 160)), (theirs, (40, 30, 150, 170))):
        path.parent.mkdir()
        seven(box=box).save(path)
    sorted_dir = tmp_path / "sorted"
    real_fsync = lenet_client.atomic.fsync_path

    def other_run_lands_meanwhile(path):  # called once this run's copy is written, before it takes its name
        real_fsync(path)
        if path.name.endswith(".partial.png") and not (sorted_dir / "7" / "IMG_0001.png").exists():
            (sorted_dir / "7" / "IMG_0001.png").write_bytes(theirs.read_bytes())

    monkeypatch.setattr(lenet_client.atomic, "fsync_path", other_run_lands_meanwhile)
    results = [{"path": str(mine), "digit": 7}]
    sort_into(results, sorted_dir)
    assert (sorted_dir / "7" / "IMG_0001.png").read_bytes() == theirs.read_bytes()  # theirs, untouched
    assert Path(results[0]["sorted_into"]).read_bytes() == mine.read_bytes()  # mine, under its hashed name
    assert Path(results[0]["sorted_into"]).name.startswith("IMG_0001-") and not results[0]["already_sorted"]
    assert not [p for p in sorted_dir.rglob("*") if "partial" in p.name]


def test_the_same_picture_sorted_by_two_runs_at_once_is_one_copy(tmp_path, monkeypatch):
    import lenet_client.atomic
    from lenet_client.sort import content_hash, sort_into

    picture = tmp_path / "IMG_0001.png"
    seven().save(picture)
    sorted_dir = tmp_path / "sorted"
    (sorted_dir / "7").mkdir(parents=True)
    (sorted_dir / "7" / "IMG_0001.png").write_bytes(b"another picture of that name, there before")
    hashed = sorted_dir / "7" / f"IMG_0001-{content_hash(picture.read_bytes())[:12]}.png"
    real_fsync = lenet_client.atomic.fsync_path

    def other_run_lands_meanwhile(path):
        real_fsync(path)
        if path.name.endswith(".partial.png") and "-" in path.name and not hashed.exists():
            hashed.write_bytes(picture.read_bytes())

    monkeypatch.setattr(lenet_client.atomic, "fsync_path", other_run_lands_meanwhile)
    results = [{"path": str(picture), "digit": 7}]
    sort_into(results, sorted_dir)
    assert results[0]["sorted_into"] == str(hashed) and results[0]["already_sorted"]
    assert {p.name for p in (sorted_dir / "7").iterdir()} == {"IMG_0001.png", hashed.name}


def test_sort_into_a_folder_that_cannot_be_written_is_one_line_and_exit_6(small_trained_onnx, tmp_path):
    model, _ = small_trained_onnx
    seven().save(tmp_path / "a.png")
    (tmp_path / "a-file").write_text("")
    done = subprocess.run([sys.executable, "-m", "lenet_client", str(model), str(tmp_path / "a.png"), "--sort-into",
                           str(tmp_path / "a-file")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 6 and done.stderr.count("\n") == 1 and "--sort-into" in done.stderr, done.stderr
    assert (tmp_path / "a-file").read_text() == ""


@pytest.mark.parametrize("number, status", [(2, 130), (15, 143), (1, 129)], ids=["SIGINT", "SIGTERM", "SIGHUP"])
def test_a_stop_signal_ends_the_predictor_with_one_line_and_no_half_copy(small_trained_onnx, tmp_path, number,
                                                                         status):
    """It used to print a KeyboardInterrupt traceback (SIGINT), or die silently leaving a copy half written."""
    import signal
    import time

    model, _ = small_trained_onnx
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    seven().save(pictures / "0.png")
    for i in range(1, 1000):  # the copies come after every picture is read: 1,000 take most of a second
        (pictures / f"{i}.png").write_bytes((pictures / "0.png").read_bytes() + str(i).encode())
    # SIGINT as a terminal delivers it: a shell starts background jobs with SIGINT ignored, which a child inherits
    # (and Python then installs no handler for it); CI may run the suite so.
    process = subprocess.Popen([sys.executable, "-m", "lenet_client", str(model), str(pictures), "--sort-into",
                                str(tmp_path / "sorted")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True, start_new_session=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while not any((tmp_path / "sorted").rglob("*.png")):  # signalled while it reads and copies, not before
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.Signals(number))
    stderr = process.communicate(timeout=120)[1]
    assert process.returncode == status and stderr == f"lenet-predict: interrupted by {signal.Signals(number).name}\n"
    assert not [p for p in tmp_path.rglob("*") if ".partial" in p.name]


def ink_box(field: np.ndarray) -> np.ndarray:
    """The part of a 28x28 field that holds ink, as int."""
    rows, cols = np.nonzero(field)
    return field[rows.min():rows.max() + 1, cols.min():cols.max() + 1].astype(int)


def test_a_phone_photo_of_48_megapixels_is_read_reduced_and_pictures_too_large_are_refused(tmp_path, monkeypatch):
    """Phones take 48-200 MP: a JPEG is decoded at 1/2-1/8 of its size (its longer side kept at least the working
    size), so it is read as the same digit drawn small; Pillow's own bound (here lowered under 48 MP, as 200 MP
    passes Pillow's 89) does not refuse it first. A PNG as large cannot be decoded reduced, nor can a progressive
    JPEG (its decoder holds the whole picture's coefficients): refused from the header, as is a JPEG longer than
    20,000 pixels, all with the same words."""
    from lenet_client.pictures import PictureError, open_picture
    from lenet_client.preprocess import to_mnist

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000_000)
    photo = tmp_path / "phone.jpg"
    seven((8000, 6000), (3000, 1500, 5000, 4500), 120, mode="RGB").save(photo, quality=90)
    image = open_picture(photo)
    assert image.size == (1000, 750)  # 1/8: decoded as 0.75 MP, not 48
    for size, decoded in (((640, 480), (320, 240)), ((4000, 56), (1000, 14))):  # the longer side kept at 256 or
        seven(size, (0, 0, size[0] - 1, size[1] - 1), 3, mode="RGB").save(tmp_path / "other.jpg")  # more, and
        assert open_picture(tmp_path / "other.jpg").size == decoded  # the shorter at 8 (500x7 was "too small")
    small = ink_box(to_mnist(seven((1000, 750), (375, 187, 625, 562), 15)))
    read = ink_box(to_mnist(image))  # the digits compared, not where rounding put each in the field
    assert read.shape == small.shape and np.abs(read - small).mean() < 8
    seven((8000, 6000), (3000, 1500, 5000, 4500), 120).save(tmp_path / "progressive.jpg", progressive=True)
    for name, size in (("large.png", (8000, 6000)), ("strip.jpg", (20001, 8)), ("progressive.jpg", (8000, 6000))):
        if not (tmp_path / name).exists():
            Image.new("L", size, 255).save(tmp_path / name)
        with pytest.raises(PictureError, match=rf"^{tmp_path / name}: too large(, {size[0]}x{size[1]} = .* pixels)? "
                                               r"\(allowed: a JPEG up to 20,000 on each side, read reduced; a "
                                               r"progressive JPEG or any other picture up to 40,000,000 pixels, each "
                                               r"side up to 20,000\)$"):
            open_picture(tmp_path / name)


def test_a_damaged_jpeg_header_or_exif_block_is_one_clear_outcome(tmp_path):
    """A file that starts as a JPEG and stops (4 bytes) is not a picture, in the words any other such file gets; an
    EXIF block whose orientation is set but whose resolution tag has the wrong type (Pillow raised TypeError from
    exif_transpose: a traceback, exit 1, and the other pictures lost) leaves the picture read as it is, with none of
    Pillow's warnings."""
    import warnings

    from lenet_client.pictures import PictureError, open_picture
    from lenet_client.preprocess import to_mnist

    (tmp_path / "cut.jpg").write_bytes(b"\xff\xd8\xff\xe0")
    with pytest.raises(PictureError, match=r"cut\.jpg: not a picture that Pillow can read$"):
        open_picture(tmp_path / "cut.jpg")
    # "Exif", a big-endian TIFF header and two tags: orientation 6 (SHORT), XResolution 0 as a BYTE (not a RATIONAL)
    exif = bytes.fromhex("4578696600004d4d002a00000008000201120003000000010006000001"
                         "1a00010000000100000026000000000000004800000001")
    seven(mode="RGB").save(tmp_path / "exif.jpg", exif=exif)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert to_mnist(open_picture(tmp_path / "exif.jpg")).max() == 255


def calibrated_copy(onnx_path: Path, folder: Path, **keys: str) -> Path:
    """The fixture's model with calibration keys added to its metadata, as the job writes them."""
    import onnx

    proto = onnx.load(str(onnx_path))
    for key, value in keys.items():
        proto.metadata_props.add(key=f"calibration.{key}", value=value)
    path = folder / "calibrated.onnx"
    onnx.save(proto, str(path))
    return path


def test_probabilities_are_calibrated_by_the_models_temperature_and_a_low_answer_is_unsure(small_trained_onnx,
                                                                                           tmp_path):
    from lenet_client.contract import INPUT_NAME, OUTPUT_NAME, preprocessing
    from lenet_client.pictures import open_picture
    from lenet_client.predict import classify, load_model, softmax
    from lenet_client.preprocess import to_input

    model, _ = small_trained_onnx
    picture = tmp_path / "seven.png"
    seven(box=(40, 30, 150, 170), width=14).save(picture)
    calibrated = calibrated_copy(model, tmp_path, temperature="3.0", min_confidence="0.999")
    session, metadata = load_model(calibrated)
    pixels = to_input(open_picture(picture), *preprocessing(metadata))[None]
    logits = session.run([OUTPUT_NAME], {INPUT_NAME: pixels})[0]
    (result,) = classify(session, metadata, [picture])
    assert result["probability"] == pytest.approx(float(softmax(logits / 3.0).max()), rel=1e-6)
    assert result["probability"] < float(softmax(logits).max())  # T > 1: a softer, humbler answer
    assert result["unsure"] and result["digit"] == int(logits.argmax())  # unsure, and the digit still given
    assert not classify(session, metadata, [picture], min_confidence=0.0)[0]["unsure"]

    def predict(*arguments):
        return subprocess.run([sys.executable, "-m", "lenet_client", *map(str, arguments)], capture_output=True,
                              text=True, timeout=120)

    line = predict(calibrated, picture).stdout.rstrip("\n").split("\t")
    assert line[1:] == [str(result["digit"]), f"{result['probability']:.4f}", "unsure"]
    sure = json.loads(predict("--json", "--min-confidence", "0", calibrated, picture).stdout)["results"][0]
    assert sure["unsure"] is False and sure["probability"] == result["probability"]
    # A model from before calibration: its raw softmax, and never unsure unless asked.
    (old,) = json.loads(predict("--json", model, picture).stdout)["results"]
    assert old["probability"] == pytest.approx(float(softmax(logits).max()), rel=1e-6) and old["unsure"] is False


def test_sort_into_puts_the_unsure_pictures_in_unsure_for_a_person_to_label(small_trained_onnx, tmp_path):
    model, _ = small_trained_onnx
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    seven().save(pictures / "a.png")
    seven(box=(40, 30, 150, 170), width=14).save(pictures / "b.png")
    done = subprocess.run([sys.executable, "-m", "lenet_client", "--json", "--min-confidence", "1", str(model),
                           str(pictures), "--sort-into", str(tmp_path / "labelled")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)["results"]
    assert all(r["unsure"] and Path(r["sorted_into"]).parent == tmp_path / "labelled" / "unsure" for r in results)
    assert sorted(p.name for p in (tmp_path / "labelled" / "unsure").iterdir()) == ["a.png", "b.png"]


@pytest.mark.parametrize("keys", [{"temperature": "0"}, {"temperature": "nan"}, {"min_confidence": "1.5"},
                                  {"temperature": "warm"}, {"temperature": "1e-300"}, {"temperature": "1e308"},
                                  {"temperature": ""}, {"min_confidence": "0x1"}])
def test_a_model_whose_calibration_cannot_be_used_is_refused_in_one_line(small_trained_onnx, tmp_path, keys):
    model, _ = small_trained_onnx
    done = subprocess.run([sys.executable, "-m", "lenet_client", str(calibrated_copy(model, tmp_path, **keys)),
                           str(ROOT / "docs" / "images" / "digit-7.png")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 3 and done.stderr.count("\n") == 1 and "calibration.temperature=" in done.stderr


@pytest.mark.parametrize("value", ["-0.1", "1.01", "nan", "most"])
def test_min_confidence_outside_0_to_1_is_a_bad_command_line(small_trained_onnx, value):
    model, _ = small_trained_onnx
    done = subprocess.run([sys.executable, "-m", "lenet_client", "--min-confidence", value, str(model),
                           str(ROOT / "docs" / "images" / "digit-7.png")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "allowed: a number 0-1" in done.stderr


def test_a_model_with_a_damaged_weight_is_refused_and_no_picture_is_filed(small_trained_onnx, tmp_path):
    """Valid ONNX with the contract's names and metadata, one weight NaN: every answer would be 0 with a NaN
    probability (not JSON), and --sort-into would file every picture under 0/."""
    import onnx
    from onnx import numpy_helper

    model, _ = small_trained_onnx
    proto = onnx.load(str(model))
    weights = max(proto.graph.initializer, key=lambda tensor: np.prod(tensor.dims))
    values = numpy_helper.to_array(weights).copy()
    values.flat[0] = np.nan
    weights.CopyFrom(numpy_helper.from_array(values, weights.name))
    damaged = tmp_path / "damaged.onnx"
    onnx.save(proto, str(damaged))
    done = subprocess.run([sys.executable, "-m", "lenet_client", "--json", str(damaged), str(ROOT / "docs" / "images"
                           / "digit-7.png"), "--sort-into", str(tmp_path / "sorted")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 3 and done.stdout == "" and done.stderr.count("\n") == 1, done.stderr
    assert "gives NaN or infinite logits" in done.stderr and not (tmp_path / "sorted").exists()


def test_results_lost_to_a_full_disk_are_exit_6_and_a_reader_that_left_is_not(small_trained_onnx, tmp_path):
    """`lenet-predict --json M pic > /dev/full` exited 0 with every result lost."""
    onnx_path, _ = small_trained_onnx
    picture = tmp_path / "seven.png"
    seven().save(picture)
    for form in (["--json"], []):
        with open("/dev/full", "w") as full:
            done = subprocess.run([sys.executable, "-m", "lenet_client", *form, str(onnx_path), str(picture)],
                                  stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
        assert done.returncode == 6 and done.stderr == "lenet-predict: cannot write the results: No space left on " \
                                                       "device\n", done.stderr


def test_a_stderr_that_is_full_or_closed_loses_the_line_not_the_status_nor_the_json(small_trained_onnx, tmp_path):
    """A bad picture with stderr on a full disk was exit 1 (the line's OSError, then its traceback, lost too); with
    stderr closed, print(file=None) would put the line on stdout, inside --json."""
    onnx_path, _ = small_trained_onnx
    (tmp_path / "bad.png").write_text("not a picture")
    seven().save(tmp_path / "seven.png")
    command = [sys.executable, "-m", "lenet_client", "--json", str(onnx_path), str(tmp_path / "bad.png"),
               str(tmp_path / "seven.png")]
    with open("/dev/full", "w") as full:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=full, text=True, timeout=120)
    assert done.returncode == 4 and [r.get("digit") for r in json.loads(done.stdout)["results"]] == [None, 7]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120,
                          preexec_fn=lambda: os.close(2))  # as `2>&-`
    assert done.returncode == 4 and [r.get("digit") for r in json.loads(done.stdout)["results"]] == [None, 7]


def test_sort_into_long_names_an_inbox_sorted_into_itself_and_one_picture_that_cannot_be_copied(
        small_trained_onnx, tmp_path, capsys):
    """A name of 80 Japanese characters (244 bytes: the temporary name did not fit) is copied, hashed when its name
    is taken too; an inbox sorted into itself copies its pictures into its digit folders (each was "already
    sorted", being under the folder); a picture whose digit's folder is a file is its own line, not the call's."""
    from lenet_client.predict import main

    onnx_path, _ = small_trained_onnx
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    long_name = "手" * 80 + ".png"  # 244 bytes
    seven().save(inbox / long_name)
    seven(box=(50, 40, 150, 170)).save(inbox / "other.png")
    assert main([str(onnx_path), str(inbox), "--sort-into", str(inbox), "--json", "--min-confidence", "0"]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    assert all(not r["already_sorted"] and Path(r["sorted_into"]).parent == inbox / "7" for r in results)
    assert {p.name for p in (inbox / "7").iterdir()} == {long_name, "other.png"}
    # The inbox emptied, a seven moved into 1/ by a person (a correction, as it were), and the sorted pictures sorted
    # again: each is already in its place; nothing is copied twice or undone.
    (inbox / long_name).unlink()
    (inbox / "other.png").unlink()
    (inbox / "1").mkdir()
    (inbox / "7" / "other.png").rename(inbox / "1" / "other.png")
    assert main([str(onnx_path), str(inbox / "7"), str(inbox / "1" / "other.png"), "--sort-into", str(inbox),
                 "--json", "--min-confidence", "0"]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    assert all(r["already_sorted"] and r["sorted_into"] == r["path"] for r in results), results
    assert {p.relative_to(inbox).as_posix() for p in inbox.rglob("*") if p.is_file()} == {
        f"7/{long_name}", "1/other.png"}
    seven().save(inbox / long_name)  # for what follows
    # Another picture of the same long name: the content hash joins the name, which still fits.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    seven(width=14).save(elsewhere / long_name)
    assert main([str(onnx_path), str(elsewhere / long_name), "--sort-into", str(inbox), "--json",
                 "--min-confidence", "0"]) == 0
    (hashed,) = {p for p in (inbox / "7").iterdir()} - {inbox / "7" / long_name, inbox / "7" / "other.png"}
    assert len(hashed.name.encode()) <= 255 and hashed.name.endswith(".png") and hashed.name.startswith("手")
    capsys.readouterr()
    # The digit folder of the sevens is a file here: each seven is its own line and status 6; a picture read as
    # another digit is still copied, and every picture is still read and printed.
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "7").write_text("not a folder")
    line = Image.new("L", (120, 160), 255)
    ImageDraw.Draw(line).line([(60, 20), (60, 140)], fill=0, width=12)
    line.save(tmp_path / "line.png")
    assert main([str(onnx_path), str(tmp_path / "line.png"), str(elsewhere / long_name), "--sort-into",
                 str(blocked), "--min-confidence", "0", "--json"]) == 6
    captured = capsys.readouterr()
    results = {Path(r["path"]).name: r for r in json.loads(captured.out)["results"]}
    assert results[long_name]["digit"] == 7 and "sorted_into" not in results[long_name]
    assert results["line.png"]["digit"] != 7, "a vertical stroke must be read as another digit for this case"
    assert Path(results["line.png"]["sorted_into"]).parent == blocked / str(results["line.png"]["digit"])
    assert captured.err.count("\n") == 1 and f"{long_name}: cannot be copied into" in captured.err, captured.err


def test_a_huge_sparse_file_in_a_sorted_folder_or_a_labelled_one_is_passed_over_unread(small_trained_onnx,
                                                                                         tmp_path, monkeypatch):
    """A 64 GB sparse file was read whole to hash it: MemoryError, exit 1."""
    import lenet_client.sort
    from job.training.extra import load_extra
    from lenet_client.pictures import file_hash
    from lenet_client.predict import main

    onnx_path, _ = small_trained_onnx
    labelled = tmp_path / "labelled"
    for digit in "17":
        (labelled / digit).mkdir(parents=True)
    with open(labelled / "7" / "huge.png", "wb") as huge:
        huge.truncate(64 << 30)
    for index in range(5):
        seven(width=6 + index).save(labelled / "7" / f"{index}.png")
    seven().save(tmp_path / "new.png")
    hashed = []
    monkeypatch.setattr(lenet_client.sort, "file_hash", lambda path: hashed.append(path.name) or file_hash(path))
    assert main([str(onnx_path), str(tmp_path / "new.png"), "--sort-into", str(labelled), "--min-confidence",
                 "0"]) == 0
    assert "huge.png" not in hashed and "0.png" in hashed  # never read, not even in chunks
    # A picture to sort that holds gigabytes after its end: read fine, not copied (it would be held whole), its line.
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    seven().save(inbox / "big.png")
    with open(inbox / "big.png", "r+b") as big:
        big.truncate(64 << 30)
    seven(width=13).save(inbox / "ok.png")
    assert main([str(onnx_path), str(inbox), "--sort-into", str(labelled), "--min-confidence", "0"]) == 6
    assert [p.name for p in labelled.rglob("ok.png")] == ["ok.png"] and not list(labelled.rglob("big.png"))
    extra = load_extra(labelled, tmp_path / "cache", max_bad_share=0.5)
    assert [(Path(s.path).name, s.reason.split(" (")[0]) for s in extra.skipped] == [("huge.png",
                                                                                       "larger than any picture")]


def test_closed_standard_output_is_exit_6_and_names_in_other_encodings_stay_strict_json(small_trained_onnx, tmp_path,
                                                                                         capsys):
    """`lenet-predict M pic >&-` exited 0 with its results dropped; a Latin-1 name went into --json as a lone
    surrogate (jq shows U+FFFD: the name is lost). It is Python's quoted form now, which gives the bytes back."""
    import ast

    from lenet_client.predict import main

    onnx_path, _ = small_trained_onnx
    name = os.fsdecode(b"caf\xe9.png")
    seven().save(tmp_path / name)
    done = subprocess.run(["bash", "-c", '"$@" >&-', "_", sys.executable, "-m", "lenet_client", str(onnx_path),
                           str(tmp_path / name)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 6 and done.stderr == "lenet-predict: cannot write the results: standard output is " \
                                                   "closed\n", done.stderr
    assert main([str(onnx_path), str(tmp_path / name), "--json"]) == 0
    out = capsys.readouterr().out
    [result] = json.loads(out)["results"]
    result["path"].encode("utf-8")  # strict: no lone surrogate (escaped in the JSON), which jq would garble
    assert os.fsencode(ast.literal_eval(result["path"])) == os.fsencode(tmp_path / name)


def test_a_pool_is_started_only_for_what_would_take_long_here():
    from lenet_client import reading

    assert reading.pool_pays(spent=0.2, read=20, left=200)  # 2 s left at this pace
    assert not reading.pool_pays(spent=0.2, read=20, left=40)  # 0.4 s left
    assert not reading.pool_pays(spent=0.05, read=1, left=1000)  # too soon to tell: the first picture is slow


def test_many_pictures_are_read_on_every_core_as_they_are_one_by_one(small_trained_onnx, tmp_path, monkeypatch):
    """A folder of many pictures is read by a pool of processes: the same bytes, the same errors with the same
    words, in the same order, as reading them one by one here (a damaged file, a blank page and a text file among
    them, each in a different chunk). Only a caller that asks for every core gets a pool: a script without an
    `if __name__ == "__main__":` guard would run again in each of its processes."""
    from lenet_client import reading

    paths = []
    for i in range(60):
        path = tmp_path / f"{i:03d}.png"
        if i == 3:
            path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)  # damaged
        elif i == 17:
            Image.new("L", (300, 200), 255).save(path)  # no digit
        elif i == 30:
            path.write_text("not a picture")
        else:
            seven((120 + 7 * i, 100 + 5 * i), (20 + i, 10 + i, 80 + 2 * i, 90 + 3 * i), 3 + i % 9).save(path)
        paths.append(path)
    pools = []

    class Pool(reading.ProcessPoolExecutor):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            pools.append(self)

    monkeypatch.setattr(reading, "ProcessPoolExecutor", Pool)
    monkeypatch.setattr(reading, "usable_cpus", lambda: 2)
    monkeypatch.setattr(reading, "POOL_PAYS_FROM", 0.0)
    monkeypatch.setattr(reading, "ESTIMATE_AFTER", 0.0)  # the pool from the second picture on
    pooled = reading.mnist_pictures(paths, every_core=True)
    assert len(pools) == 1, "the pictures were not read by a pool"
    one_by_one = [reading.mnist_picture(path) for path in paths]
    from lenet_client.predict import classify, load_model, main

    classify(*load_model(small_trained_onnx[0]), paths)  # an app's call, and the command line's function called
    main([str(small_trained_onnx[0]), *map(str, paths)])  # from a script: neither asked for a pool
    assert len(pools) == 1, "a pool was started for a caller that did not ask for one"
    assert [type(r) for r in pooled] == [type(r) for r in one_by_one]
    assert [type(pooled[i]).__name__ for i in (3, 17, 30)] == ["PictureError", "NoDigitError", "PictureError"]
    for got, expected in zip(pooled, one_by_one, strict=True):
        if isinstance(expected, np.ndarray):
            assert np.array_equal(got, expected)
        else:
            assert str(got) == str(expected)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_readers_start_with_one_blas_thread_and_a_heap_that_keeps_its_memory(small_trained_onnx, tmp_path):
    """The pool's processes get one BLAS thread and MALLOC_TOP_PAD_ (without it glibc faults each picture's memory in
    again; a user's value, even glibc's default, is slower than none: docs/performance.md), whatever the user set."""
    import signal

    process, readers = reading_in_a_pool(small_trained_onnx[0], tmp_path,
                                         environment={"OMP_NUM_THREADS": "3", "MALLOC_TOP_PAD_": "0"})
    try:
        seen = [dict(line.split(b"=", 1) for line in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if line)
                for pid in readers]
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
    for reader in seen:
        assert reader[b"MALLOC_TOP_PAD_"] == b"33554432", reader
        assert reader[b"OPENBLAS_NUM_THREADS"] == reader[b"OMP_NUM_THREADS"] == reader[b"MKL_NUM_THREADS"] == b"1"


def test_the_environment_given_to_the_readers_is_this_processs_own_again_afterwards(monkeypatch):
    """An app calling classify(every_core=True) keeps its environment, after a pool that started or one that failed."""
    from lenet_client.reading import worker_environment

    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.setenv("MALLOC_TOP_PAD_", "1000")
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    with pytest.raises(OSError), worker_environment():
        assert (os.environ["OMP_NUM_THREADS"], os.environ["OPENBLAS_NUM_THREADS"]) == ("1", "1")
        assert os.environ["MALLOC_TOP_PAD_"] == "33554432"
        raise OSError("no pool could start")
    assert os.environ["OMP_NUM_THREADS"] == "3" and os.environ["MALLOC_TOP_PAD_"] == "1000"
    assert "OPENBLAS_NUM_THREADS" not in os.environ


def reading_in_a_pool(model, tmp_path, options=(), environment=None):
    """lenet-predict started on 400 pictures, once its pool of readers is running: (process, the readers' pids)."""
    import signal
    import time

    from conftest import children
    from lenet_client.environment import usable_cpus

    if usable_cpus() < 2:
        pytest.skip("one CPU: pictures are read in the process itself")
    pictures = many_pictures(tmp_path / "pictures")
    process = subprocess.Popen([sys.executable, "-m", "lenet_client", str(model), str(pictures), *options],
                               env={**without_worker_environment(), **(environment or {})},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as a terminal has it
    deadline = time.monotonic() + 60
    while len(readers := [pid for pid in children(process.pid) if is_reader(pid)]) < 2:
        assert process.poll() is None and time.monotonic() < deadline, "no pool was started"
        time.sleep(0.01)
    return process, readers


def without_worker_environment():
    from lenet_client.reading import WORKER_ENVIRONMENT

    return {name: value for name, value in os.environ.items() if name not in WORKER_ENVIRONMENT}


def many_pictures(folder, count=400):
    """`count` pictures of 480x360 in `folder`: enough that lenet-predict reads them in a pool."""
    folder.mkdir(parents=True)
    seven((480, 360), (100, 60, 380, 320), 12).save(folder / "0.png")
    for i in range(1, count):
        (folder / f"{i}.png").write_bytes((folder / "0.png").read_bytes() + str(i).encode())
    return folder


def is_reader(pid):
    """Whether the process is one of the pool's (not multiprocessing's resource tracker, also a child)."""
    try:
        return b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def all_ended(pids, seconds):
    import time

    from conftest import live

    deadline = time.monotonic() + seconds
    while any(live(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not [pid for pid in pids if live(pid)]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_stop_while_the_pool_reads_ends_every_reader_with_one_line(small_trained_onnx, tmp_path):
    """SIGTERM to lenet-predict alone (as `kill` sends it); Ctrl-C, which a terminal sends to the whole process
    group, readers included, and twice (a second one during the pool's shutdown left it waiting forever); the
    terminal closed (SIGHUP to the group: multiprocessing's resource tracker died of it, with tracebacks): one line,
    the first signal's status, and no reader left."""
    import signal
    import time

    model, _ = small_trained_onnx
    for number, status, to_the_group, twice in ((signal.SIGTERM, 143, False, False), (signal.SIGINT, 130, True, True),
                                                (signal.SIGHUP, 129, True, False)):
        process, readers = reading_in_a_pool(model, tmp_path / f"{number.name}-{twice}")
        for _ in range(2 if twice else 1):
            if to_the_group:
                os.killpg(process.pid, number)
            else:
                process.send_signal(number)
            time.sleep(0.2)
        stderr = process.communicate(timeout=60)[1]
        assert process.returncode == status and stderr == f"lenet-predict: interrupted by {number.name}\n", stderr
        assert all_ended(readers, 5), "readers outlived lenet-predict"


def test_where_no_pool_can_start_the_pictures_are_read_in_lenet_predict_itself(small_trained_onnx, tmp_path):
    """Run from a folder that was deleted (multiprocessing's start asks for the working folder): a traceback and
    exit 1, where one process reads them all."""
    model, _ = small_trained_onnx
    pictures = many_pictures(tmp_path / "pictures")
    (tmp_path / "gone").mkdir()
    done = subprocess.run([sys.executable, "-m", "lenet_client", "--json", str(model), str(pictures)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path / "gone",
                          preexec_fn=lambda: os.rmdir(tmp_path / "gone"))
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert [r["digit"] for r in json.loads(done.stdout)["results"]] == [7] * 400


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_readers_end_when_lenet_predict_is_killed(small_trained_onnx, tmp_path):
    """SIGKILL (the OOM killer, a container stopped hard): the readers must not wait for work forever."""
    import signal

    from conftest import children

    model, _ = small_trained_onnx
    process, readers = reading_in_a_pool(model, tmp_path)
    helpers = children(process.pid)  # the readers and multiprocessing's resource tracker
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert all_ended(helpers, 5), "processes outlived a killed lenet-predict"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_reader_killed_from_outside_leaves_every_picture_read(small_trained_onnx, tmp_path):
    """The OOM killer takes one of the pool's processes: the pictures are read in lenet-predict itself, every one
    answered, exit 0, and the other reader ends too."""
    import signal

    model, _ = small_trained_onnx
    process, readers = reading_in_a_pool(model, tmp_path, ["--json"])
    os.kill(readers[0], signal.SIGKILL)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0 and stderr == "", stderr
    results = json.loads(stdout)["results"]
    assert len(results) == 400 and {r["digit"] for r in results} == {7}
    assert all_ended(readers, 5)
