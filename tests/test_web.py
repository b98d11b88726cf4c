"""The reference app (web/): the contract's preprocessing ported to JavaScript gives Python's bytes, and the page,
served by its documented command, reads digits drawn with a real mouse in headless Chromium."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image, ImageDraw

from bench.digits import STROKES, make_sample
from bench.families import FAMILIES, HELD_OUT, TUNING, family_samples, mnist_test_set
from bench.web_drawings import draw
from conftest import ROOT, foreign_model, job_env, seven
from lenet_client.ink import NoDigitError
from lenet_client.preprocess import to_mnist

WEB = ROOT / "web"
NODE = shutil.which("node")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def installed() -> None:
    if NODE is None or not (WEB / "node_modules" / "onnxruntime-web").is_dir():
        pytest.fail("node and web/node_modules are needed: `make test` installs them (apt install nodejs npm; "
                    "npm ci --prefix web)")


def varied_pictures(data_dir: Path):
    """(name, PIL image): every family of the preprocessing benchmark, tuning and held out, 14 each (4 of the large
    page photos), the benchmark's mixed pictures in every colour form, and pictures with alpha channels."""
    mnist = mnist_test_set(data_dir)
    for family in TUNING + HELD_OUT:
        count = 4 if family == "photo of a page" else 14
        for index, sample in enumerate(family_samples(family, count, seed=7, mnist_images=mnist)):
            yield f"{family}-{index}", sample.image
    rng = np.random.default_rng(11)
    for index in range(24):
        yield f"mixed-{index}", make_sample(index % 10, rng).image
    ink = seven(ink=255, paper=0)
    for colour in [(20, 20, 200), (255, 255, 255), (0, 0, 0)]:
        drawing = Image.new("RGBA", ink.size, colour + (0,))
        drawing.putalpha(ink)
        yield f"drawing on a transparent canvas {colour}", drawing
    for radius in (0, 30, 100):
        framed = seven(ink=30, paper=220).convert("RGBA")
        mask = Image.new("L", framed.size, 0)
        ImageDraw.Draw(mask).rounded_rectangle([(0, 0), (framed.width - 1, framed.height - 1)], radius, fill=255)
        framed.putalpha(mask)
        yield f"rounded corners {radius}", framed
    from test_preprocess import polarity_cases

    for name, (gray, _) in polarity_cases().items():  # each branch of step 4's polarity
        yield name, Image.fromarray((255 * gray).astype(np.uint8)).resize((gray.shape[1] * 4, gray.shape[0] * 4),
                                                                         Image.Resampling.NEAREST)
    stroke = Image.new("L", (10, 2000), 255)  # reduced to one pixel wide while its ink is found
    ImageDraw.Draw(stroke).line([(5, 40), (5, 1960)], fill=0, width=3)
    yield "a stroke 200 times as long as wide", stroke
    yield "blank", Image.new("L", (60, 40), 255)
    yield "noise only", Image.fromarray(np.random.default_rng(3).integers(0, 256, (80, 80), dtype=np.uint8))


@pytest.fixture(scope="module")
def pictures_for_node(real_data_dir, tmp_path_factory):
    """The varied pictures as RGBA bytes (what a browser's canvas gives) with Python's 28x28 bytes for each."""
    folder = tmp_path_factory.mktemp("web-pictures")
    count = 0
    for index, (_name, image) in enumerate(varied_pictures(real_data_dir)):
        try:
            expected = to_mnist(image).tobytes()
        except NoDigitError:
            expected = b"no digit"
        rgba = image.convert("RGBA")
        (folder / f"{index:03d}.{rgba.width}x{rgba.height}.rgba").write_bytes(rgba.tobytes())
        (folder / f"{index:03d}.expected").write_bytes(expected)
        count += 1
    assert count >= 200
    return folder


def test_the_javascript_port_gives_pythons_bytes_and_reads_the_models_metadata(pictures_for_node, tmp_path):
    installed()
    from export.formats import export_model
    from job.training.model import build_model

    metadata = {"model.variant": "plain", "preprocess.scale": repr(1 / 255), "preprocess.mean": "0.1307",
                "preprocess.std": "0.3081", "run.id": "20261130T000000Z-ünïcode"}
    model = export_model(build_model("plain", 0.1).eval(), tmp_path, metadata)["onnx"]
    stored = {p.key: p.value for p in onnx.load(model).metadata_props}
    env = os.environ | {"LENET_WEB_PICTURES": str(pictures_for_node), "LENET_WEB_MODEL": str(model),
                        "LENET_WEB_MODEL_METADATA": json.dumps(stored)}
    done = subprocess.run([NODE, "--test", "test/"], cwd=WEB, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert re.search(r"^# pass 6$", done.stdout, re.M) and re.search(r"^# skipped 0$", done.stdout, re.M), \
        done.stdout[-2000:]


@pytest.fixture(scope="module")
def published_by_the_job(real_data_dir, tmp_path_factory):
    """An outputs folder with a run the job itself published: both variants, trained on 30,000 real images for 2
    epochs (enough to read clean drawings)."""
    tmp_path = tmp_path_factory.mktemp("web-published")
    done = subprocess.run([sys.executable, "-m", "job"], cwd=tmp_path, capture_output=True, text=True, timeout=900,
                          env=job_env(tmp_path, real_data_dir, train_limit=30000, test_limit=2000, epochs=2,
                                      min_test_accuracy=0.95, device="cpu"))
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp_path / "outputs"


class Page:
    """The page served by `node web/serve.mjs` (the documented command) in headless Chromium."""

    def __init__(self, browser, outputs: Path):
        self.server = subprocess.Popen([NODE, str(WEB / "serve.mjs"), "--outputs", str(outputs), "--port", "0"],
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.server.stdout.readline()
        self.url = re.search(r"http://\S+", line).group(0)
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.page = browser.new_page()
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.goto(self.url)
        self.page.wait_for_function("document.body.dataset.model")

    def close(self):
        self.page.close()
        self.server.terminate()
        self.server.wait(timeout=10)

    def draw(self, digit: int, box: tuple[float, float, float, float]) -> str:
        """Draws the digit's strokes into `box` of the pad with the mouse (bench.web_drawings); the digit read."""
        return draw(self.page, digit, box, steps=1)

    def seen(self) -> np.ndarray:
        """The 28x28 picture the page shows as the model's input."""
        data = self.page.evaluate("Array.from(document.querySelector('#seen').getContext('2d')"
                                  ".getImageData(0, 0, 28, 28).data)")
        return np.array(data, dtype=np.uint8).reshape(28, 28, 4)[..., 0]

    def drop(self, path: Path) -> None:
        """Drops the file on the pad as a file manager would: a real DataTransfer holding a File."""
        content = base64.b64encode(path.read_bytes()).decode()
        transfer = self.page.evaluate_handle("""([name, content]) => {
            const bytes = Uint8Array.from(atob(content), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name));
            return transfer; }""", [path.name, content])
        self.page.evaluate("document.querySelector('#digit').textContent = '…'")
        self.page.dispatch_event("#pad", "drop", {"dataTransfer": transfer})
        self.page.wait_for_function("document.querySelector('#digit').textContent !== '…'", timeout=10_000)


@pytest.fixture(scope="module")
def browser():
    installed()
    if CHROMIUM is None:
        pytest.fail("chromium is needed: `apt install chromium` (.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, published_by_the_job):
    opened = Page(browser, published_by_the_job)
    yield opened
    opened.close()


PAD = 280
BOXES = {"centered": (80, 40, 200, 240), "small in the top left corner": (6, 6, 56, 66),
         "small in the bottom right corner": (222, 212, 272, 272), "edge to edge": (2, 2, PAD - 2, PAD - 2),
         "off centre": (150, 120, 262, 272)}


@pytest.mark.slow
def test_digits_drawn_with_the_mouse_anywhere_on_the_pad_are_read(page):
    assert re.match(r"Model plain of run \S+, \d+\.\d\d % on MNIST's test set\.$", page.page.text_content("#status"))
    # Every digit centred; three per other place, in turn, so that each digit is drawn somewhere off centre too.
    drawings = [("centered", digit) for digit in range(10)] + [
        (where, (3 * index + k) % 10) for index, where in enumerate(list(BOXES)[1:]) for k in range(3)]
    assert {digit for where, digit in drawings if where != "centered"} == set(range(10))
    read = {(where, digit): page.draw(digit, BOXES[where]) for where, digit in drawings}
    wrong = {key: got for key, got in read.items() if got != str(key[1])}
    assert not wrong, f"{len(wrong)} of {len(read)} drawings misread: {wrong}"
    assert not page.errors
    assert all(url.startswith(page.url) for url in page.requests), "the page must work offline: no other host"


@pytest.mark.slow
def test_the_other_variant_is_loaded_on_demand_and_reads_the_drawing_again(page):
    page.draw(7, BOXES["centered"])
    page.page.select_option("#variant", "bn_dropout")
    page.page.wait_for_function("document.body.dataset.model === 'bn_dropout'")
    assert page.page.text_content("#status").startswith("Model bn_dropout of run ")
    assert any(url.endswith("/models/bn_dropout/model.onnx") for url in page.requests)
    assert page.page.text_content("#digit") == "7"
    assert page.draw(3, BOXES["edge to edge"]) == "3"


@pytest.mark.slow
def test_a_dropped_or_picked_picture_is_read_and_the_page_shows_pythons_28x28(page, published_by_the_job,
                                                                              tmp_path):
    from lenet_client.predict import classify, load_model, model_file

    session, metadata = load_model(model_file(published_by_the_job, "plain"))
    assert float(metadata["calibration.temperature"]) != 1.0  # calibrated: the page must apply it as Python does
    rng = np.random.default_rng(5)
    for index, (family, digit) in enumerate([("tight crop, 2 edges", 2), ("bold marker", 5),
                                             ("low resolution, bilinear", 8)]):
        path = tmp_path / f"{index}.png"
        FAMILIES[family](digit, rng).save(path)
        page.drop(path)
        assert page.page.text_content("#digit") == str(digit), family
        assert np.array_equal(page.seen(), to_mnist(Image.open(path))), family  # PNG decodes exactly everywhere
        (read,) = classify(session, metadata, [path])
        shown = page.page.text_content("#top3 li:first-child span:last-child")
        assert shown == f"{read['probability'] * 100:.1f} %", (family, shown, read)  # the calibrated probability
        assert (page.page.text_content("#message").startswith("Unsure")) == read["unsure"], family
    photo = tmp_path / "photo.jpg"
    FAMILIES["photo of a page"](4, rng).save(photo)
    page.page.set_input_files("#file", str(photo))
    page.page.wait_for_function("document.querySelector('#digit').textContent === '4'", timeout=10_000)
    blank = tmp_path / "blank.png"
    Image.new("RGB", (90, 90), (250, 250, 250)).save(blank)
    page.drop(blank)
    assert page.page.text_content("#digit") == "–"
    assert page.page.text_content("#message").startswith("blank.png: no ink found")
    not_a_picture = tmp_path / "notes.png"
    not_a_picture.write_text("not a picture")
    page.drop(not_a_picture)
    assert page.page.text_content("#message") == "notes.png: not a picture this browser can read"
    assert not page.errors


@pytest.mark.slow
def page_status(browser, folder) -> tuple[str, str]:
    """The page's status line and its body's data-model, with `folder` as the published outputs."""
    page = Page(browser, folder)
    try:
        return page.page.text_content("#status"), page.page.get_attribute("body", "data-model")
    finally:
        page.close()


def test_with_no_model_published_the_page_says_so(browser, tmp_path):
    status, model = page_status(browser, tmp_path)
    assert status.startswith("No model is published yet") and model == "none", status
    (tmp_path / "latest.json").write_text('{"run_id": "r1", "models": {"plain": {"onnx": "runs/r1/model.onnx"}}}')
    status, _ = page_status(browser, tmp_path)
    assert status == ("Could not load the published model: the plain model is missing "
                      "(outputs/runs/r1/model.onnx: HTTP 404)"), status
    (tmp_path / "runs" / "r1").mkdir(parents=True)  # a model whose output i is not digit i: refused, as by Python
    foreign_model(tmp_path / "runs" / "r1" / "model.onnx", metadata={
        "preprocess.scale": "1", "preprocess.mean": "0", "preprocess.std": "1", "model.classes": "9,8,7,6,5,4,3,2,1,0"})
    status, _ = page_status(browser, tmp_path)
    assert status == ("Could not load the published model: outputs/runs/r1/model.onnx labels its outputs "
                      "9,8,7,6,5,4,3,2,1,0, not the digits 0-9 in order (docs/model-contract.md)"), status


def test_the_server_is_read_only_and_serves_nothing_outside_its_folders(tmp_path):
    installed()
    import urllib.error
    import urllib.request

    (tmp_path / "latest.json").write_text("{}")
    server = subprocess.Popen([NODE, str(WEB / "serve.mjs"), "--outputs", str(tmp_path), "--port", "0"],
                              stdout=subprocess.PIPE, text=True)
    try:
        url = re.search(r"http://\S+", server.stdout.readline()).group(0)

        def status(path, method="GET"):
            try:
                return urllib.request.urlopen(urllib.request.Request(url + path, method=method)).status
            except urllib.error.HTTPError as error:
                return error.code

        assert [status(p) for p in ["", "app.js", "ort/ort.wasm.min.mjs", "outputs/latest.json"]] == [200] * 4
        for path in ["serve.mjs", "package.json", "test/preprocess.test.js", "outputs/..%2f..%2fetc%2fpasswd",
                     "ort/..%2f..%2fpackage.json", "outputs/%2e%2e/x", "outputs/%zz", "outputs"]:
            assert status(path) == 404, path
        assert status("outputs/latest.json", "PUT") == 405 and status("outputs/latest.json", "DELETE") == 405
        assert (tmp_path / "latest.json").read_text() == "{}"
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.parametrize("args, message", [
    (["--port", "http"], "--port must be a whole number 0-65535, not http"),
    (["--colour"], "Unknown option '--colour'"),
])
def test_a_bad_command_line_is_one_line_and_exit_2(args, message):
    installed()
    done = subprocess.run([NODE, str(WEB / "serve.mjs"), *args], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and message in done.stderr, done.stderr


@pytest.mark.slow
def test_digits_drawn_with_a_finger_on_a_touch_screen_are_read(browser, published_by_the_job):
    """Real touch events (Chrome DevTools Protocol), on a phone-sized page: touch-action is off on the pad, so a
    stroke draws instead of scrolling the page."""
    server = subprocess.Popen([NODE, str(WEB / "serve.mjs"), "--outputs", str(published_by_the_job), "--port", "0"],
                              stdout=subprocess.PIPE, text=True)
    context = browser.new_context(has_touch=True, is_mobile=True, viewport={"width": 400, "height": 800})
    try:
        page = context.new_page()
        page.goto(re.search(r"http://\S+", server.stdout.readline()).group(0))
        page.wait_for_function("document.body.dataset.model")
        touch = context.new_cdp_session(page)

        def finger(points):  # down at the first point, along the others, up
            touch.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [
                {"x": points[0][0], "y": points[0][1]}]})
            for x, y in points[1:]:
                touch.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": x, "y": y}]})
            touch.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})

        pad = page.locator("#pad").bounding_box()
        for digit in (2, 5, 8):
            # Clear is clicked: in this emulation the first tap after a drag fires no click (a second one does), on
            # a bare page with a canvas, a button and `width=device-width` too: Chromium's, not this page's.
            page.click("#clear")
            page.wait_for_function("document.querySelector('#digit').textContent === '–'", timeout=10_000)
            for stroke in STROKES[digit][0]:
                finger([(pad["x"] + 60 + 160 * x, pad["y"] + 30 + 220 * y) for x, y in stroke])
            page.wait_for_function("document.querySelector('#digit').textContent !== '–'", timeout=10_000)
            assert page.text_content("#digit") == str(digit)
            assert page.evaluate("window.scrollY") == 0
    finally:
        context.close()
        server.terminate()
        server.wait(timeout=10)


def test_the_server_answers_help_and_names_a_bad_option_in_one_line():
    installed()
    helped = subprocess.run([NODE, str(WEB / "serve.mjs"), "--help"], capture_output=True, text=True, timeout=30)
    assert helped.returncode == 0 and helped.stderr == "", helped.stderr
    assert all(option in helped.stdout for option in ("--outputs DIR", "--port N", "--host ADDRESS"))
    bad = subprocess.run([NODE, str(WEB / "serve.mjs"), "--ports", "80"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "'--ports'" in bad.stderr and "--help" in bad.stderr
