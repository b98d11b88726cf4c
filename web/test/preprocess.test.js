// The port against the contract: its test vector, and Python's bytes for the pictures tests/test_web.py writes.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFileSync, readdirSync, existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { PNG } from "pngjs";
import { toMnist, toInput, NoDigitError, METHOD } from "../preprocess.js";

const root = fileURLToPath(new URL("../../", import.meta.url));
const readPng = (path) => PNG.sync.read(readFileSync(path)); // RGBA, whatever the file's colour type

test("the contract's test vector, byte for byte", () => {
  const field = toMnist(readPng(`${root}docs/images/preprocess-test-vector.png`));
  assert.equal(field.reduce((a, b) => a + b, 0), 26731);
  assert.equal(createHash("sha256").update(field).digest("hex"),
    "4e66591b92e4b7a8d14724320d64cd1dfcc9dad9bd41f6c06a470e891ed8a60a");
});

test("the method is the one the contract and the Python reference name", () => {
  const contract = readFileSync(`${root}docs/model-contract.md`, "utf8");
  const python = readFileSync(`${root}client/lenet_client/preprocess.py`, "utf8");
  assert.ok(contract.includes(`\`preprocess.method\` = \`${METHOD}\``));
  assert.ok(python.includes(`METHOD = "${METHOD}"`));
});

test("a blank picture and a tiny one hold no digit", () => {
  const blank = { width: 50, height: 40, data: new Uint8ClampedArray(50 * 40 * 4).fill(255) };
  assert.throws(() => toMnist(blank), NoDigitError);
  const tiny = { width: 7, height: 40, data: new Uint8ClampedArray(7 * 40 * 4).fill(0) };
  assert.throws(() => toMnist(tiny), /too small to hold a digit: 7x40 pixels/);
});

test("the model's input is float32 scale, mean and std of the 28x28 bytes", () => {
  const input = toInput(Uint8Array.from([0, 255, 128]), 1 / 255, 0.1307, 0.3081);
  assert.ok(Math.abs(input[0] - (-0.1307 / 0.3081)) < 1e-6 && Math.abs(input[1] - (1 - 0.1307) / 0.3081) < 1e-6);
});

// Written by tests/test_web.py: NAME.rgba (width and height in the name: NAME.WxH.rgba) and NAME.expected (784
// bytes from lenet_client.preprocess.to_mnist, or the text "no digit").
const pictures = process.env.LENET_WEB_PICTURES;
test("the same 28x28 bytes as the Python reference on every picture written for it", { skip: !pictures && "LENET_WEB_PICTURES not set (tests/test_web.py sets it)" }, () => {
  const names = readdirSync(pictures).filter((n) => n.endsWith(".rgba"));
  assert.ok(names.length >= 200, `only ${names.length} pictures in ${pictures}`);
  const differing = [];
  for (const name of names) {
    const [, width, height] = name.match(/\.(\d+)x(\d+)\.rgba$/);
    const base = name.replace(/\.\d+x\d+\.rgba$/, "");
    const expected = readFileSync(`${pictures}/${base}.expected`);
    const image = { width: +width, height: +height, data: new Uint8ClampedArray(readFileSync(`${pictures}/${name}`)) };
    let got;
    try { got = Buffer.from(toMnist(image)); } catch (error) {
      if (!(error instanceof NoDigitError)) throw error;
      got = Buffer.from("no digit");
    }
    if (!got.equals(expected)) differing.push(base);
  }
  assert.deepEqual(differing, [], `${differing.length} of ${names.length} pictures differ from Python's`);
});

test("the ONNX metadata reader finds the contract's keys in a published model", { skip: !process.env.LENET_WEB_MODEL && "LENET_WEB_MODEL not set (tests/test_web.py sets it)" }, async () => {
  const { metadataOf } = await import("../onnx-metadata.js");
  const metadata = metadataOf(readFileSync(process.env.LENET_WEB_MODEL));
  assert.deepEqual(metadata, JSON.parse(process.env.LENET_WEB_MODEL_METADATA));
});
