"""Digits drawn with the mouse on the browser app, as a user would, in places and shapes that demos misread.

    .venv/bin/python -m bench.web_drawings [OUTPUTS] [--variant NAME] [--screenshot PNG]

Serves the page with `node web/serve.mjs` (the documented command) on OUTPUTS (default: outputs), opens it in
headless Chromium, draws each digit's strokes (bench.digits.STROKES, first style) into each box of the 280x280 pad
with real mouse events, and prints what `#digit` showed; and, for comparison, what the same model reads when the
pad is resized whole to 28x28, as most "draw a digit" demos do. Needs `make setup` and Debian's chromium.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

from bench.digits import STROKES

ROOT = Path(__file__).resolve().parents[1]
# (left, top, right, bottom) on the 280x280 pad; the shape's aspect ratio (width / height) in the name
BOXES = {
    "centred (0.6)": (80, 40, 200, 240),
    "small, top left corner (0.8)": (6, 6, 56, 66),
    "small, bottom right corner (0.8)": (222, 212, 272, 272),
    "edge to edge (1.0)": (2, 2, 278, 278),
    "off centre (0.7)": (150, 120, 262, 272),
    "wide and low (2.2)": (10, 150, 270, 270),
    "wider (2.6)": (10, 10, 270, 110),
    "tall and narrow (0.3)": (100, 2, 180, 278),
}


def draw(page, digit: int, box: tuple[float, float, float, float], steps: int = 3) -> str:
    """Clears the pad, draws the digit's strokes into `box` with the mouse (`steps` moves between points); the digit
    read."""
    page.click("#clear")
    pad = page.locator("#pad").bounding_box()
    left, top, right, bottom = box
    for stroke in STROKES[digit][0]:
        points = [(pad["x"] + left + (right - left) * x, pad["y"] + top + (bottom - top) * y) for x, y in stroke]
        page.mouse.move(*points[0])
        page.mouse.down()
        for point in points[1:]:
            page.mouse.move(*point, steps=steps)
        page.mouse.up()
    page.wait_for_function("document.querySelector('#digit').textContent !== '–'", timeout=10_000)
    return page.text_content("#digit")


def resized_whole(page, session, meta) -> str:
    """The pad's pixels resized whole to 28x28 (area averaging), inverted to white ink on black: the demos' way."""
    data = page.evaluate("Array.from(document.querySelector('#pad').getContext('2d')"
                         ".getImageData(0, 0, 280, 280).data)")
    pad = Image.fromarray(np.array(data, dtype=np.uint8).reshape(280, 280, 4)[..., :3]).convert("L")
    pixels = 255 - np.asarray(pad.resize((28, 28), Image.Resampling.BOX), dtype=np.float32)
    scale, mean, std = (float(meta[k]) for k in ("preprocess.scale", "preprocess.mean", "preprocess.std"))
    logits = session.run(["logits"], {"input": ((pixels * scale - mean) / std)[None, None]})[0]
    return str(int(logits.argmax()))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.web_drawings", description=__doc__.split("\n\n")[0])
    parser.add_argument("outputs", nargs="?", type=Path, default=Path("outputs"))
    parser.add_argument("--variant", default=None, help="the variant to load (default: the page's first)")
    parser.add_argument("--screenshot", type=Path, help="also save the page after drawing a centred 4")
    args = parser.parse_args()
    import json

    import onnxruntime
    from playwright.sync_api import sync_playwright

    latest = json.loads((args.outputs / "latest.json").read_text())
    variant = args.variant or next(iter(latest["models"]))
    session = onnxruntime.InferenceSession(args.outputs / latest["models"][variant]["onnx"])
    meta = session.get_modelmeta().custom_metadata_map

    server = subprocess.Popen(["node", str(ROOT / "web" / "serve.mjs"), "--outputs", str(args.outputs), "--port", "0"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None  # stdout=PIPE
        found = re.search(r"http://\S+", server.stdout.readline())
        assert found is not None, "serve.mjs did not print its address"
        url = found.group(0)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
            page = browser.new_page()
            page.goto(url)
            page.wait_for_function("document.body.dataset.model")
            if args.variant:
                page.select_option("#variant", args.variant)
                page.wait_for_function(f"document.body.dataset.model === '{args.variant}'")
            print(page.text_content("#status"))
            print(f"{'drawn':34s} {'the page':>8s}  {'resized whole':>13s}  the page misread")
            total = right = right_whole = 0
            for name, box in BOXES.items():
                read, whole = [], []
                for digit in range(10):
                    read.append(draw(page, digit, box))
                    whole.append(resized_whole(page, session, meta))
                hits = sum(got == str(digit) for digit, got in enumerate(read))
                hits_whole = sum(got == str(digit) for digit, got in enumerate(whole))
                total, right, right_whole = total + 10, right + hits, right_whole + hits_whole
                wrong = ", ".join(f"{d}->{got}" for d, got in enumerate(read) if got != str(d)) or "none"
                print(f"{name:34s} {hits:6d}/10  {hits_whole:10d}/10  {wrong}")
            print(f"{'all':34s} {right:6d}/{total}  {right_whole:10d}/{total}")
            if args.screenshot:
                draw(page, 4, BOXES["centred (0.6)"])
                page.screenshot(path=str(args.screenshot))
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
