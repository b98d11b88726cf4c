// The page: loads the published model named by outputs/latest.json, reads what is drawn on #pad or dropped on the
// page through the contract's preprocessing (preprocess.js), and shows the digit, the top 3 and the 28x28 input.
import * as ort from "./ort/ort.wasm.min.mjs";
import { toMnist, toInput, NoDigitError, METHOD } from "./preprocess.js";
import { metadataOf } from "./onnx-metadata.js";

ort.env.wasm.wasmPaths = new URL("./ort/", location.href).href;
ort.env.wasm.numThreads = 1; // threads need cross-origin isolation, and a 28x28 LeNet gains nothing from them

const $ = (id) => document.getElementById(id);
const pad = $("pad"), ink = pad.getContext("2d", { willReadFrequently: true });
const MAX_PIXELS = 40_000_000;
let model = null; // {session, metadata, variant, scale, mean, std, classes}
let drawn = false;

function say(text, problem = false) {
  $("status").textContent = text;
  $("status").classList.toggle("problem", problem);
}

const padPicture = () => ({ width: pad.width, height: pad.height, data: ink.getImageData(0, 0, pad.width, pad.height).data });

function clearPad() {
  ink.fillStyle = "#fff";
  ink.fillRect(0, 0, pad.width, pad.height);
  drawn = false;
  show(null);
}

// A pen about as wide as MNIST's strokes are to its 20x20 box, on this 280-pixel pad.
function setupPad() {
  let last = null;
  const at = (event) => {
    const box = pad.getBoundingClientRect();
    return [(event.clientX - box.left) * (pad.width / box.width), (event.clientY - box.top) * (pad.height / box.height)];
  };
  pad.addEventListener("pointerdown", (event) => {
    pad.setPointerCapture(event.pointerId);
    last = at(event);
    stroke(last, last, event);
  });
  pad.addEventListener("pointermove", (event) => {
    if (!last) return;
    const next = at(event);
    stroke(last, next, event);
    last = next;
  });
  const end = () => {
    if (!last) return;
    last = null;
    readPicture(padPicture());
  };
  pad.addEventListener("pointerup", end);
  pad.addEventListener("pointercancel", end);
}

function stroke(from, to, event) {
  const pressure = event.pointerType === "pen" && event.pressure > 0 ? 0.6 + event.pressure * 0.8 : 1;
  ink.strokeStyle = "#000";
  ink.lineWidth = 18 * pressure;
  ink.lineCap = ink.lineJoin = "round";
  ink.beginPath();
  ink.moveTo(...from);
  ink.lineTo(...to);
  ink.stroke();
  drawn = true;
}

async function readFile(file) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(file); // applies the EXIF orientation, as step 2 of the contract asks
  } catch {
    show(null, `${file.name}: not a picture this browser can read`);
    return;
  }
  if (bitmap.width * bitmap.height > MAX_PIXELS) {
    show(null, `${file.name}: too large, ${bitmap.width}x${bitmap.height} pixels (allowed: at most 40,000,000)`);
    return;
  }
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.drawImage(bitmap, 0, 0); // onto a transparent canvas: a picture's own transparency is kept
  const picture = { width: bitmap.width, height: bitmap.height, data: context.getImageData(0, 0, bitmap.width, bitmap.height).data };
  // The pad shows the picture, so that what was read is in view.
  clearPad();
  const fit = Math.min(pad.width / bitmap.width, pad.height / bitmap.height);
  ink.drawImage(bitmap, (pad.width - bitmap.width * fit) / 2, (pad.height - bitmap.height * fit) / 2,
    bitmap.width * fit, bitmap.height * fit);
  await readPicture(picture, file.name);
}

async function readPicture(picture, name = "the drawing") {
  if (!model) return;
  let mnist;
  try {
    mnist = toMnist(picture);
  } catch (error) {
    if (!(error instanceof NoDigitError)) throw error;
    show(null, `${name}: ${error.message}`);
    return;
  }
  const input = toInput(mnist, model.scale, model.mean, model.std);
  const outputs = await model.session.run({ input: new ort.Tensor("float32", input, [1, 1, 28, 28]) });
  // Calibrated: softmax(logits / T), T from the model's metadata (docs/model-contract.md, "Confidence").
  const logits = Array.from(outputs.logits.data, (v) => v / model.temperature), top = Math.max(...logits);
  const exp = logits.map((v) => Math.exp(v - top)), total = exp.reduce((a, b) => a + b, 0);
  const ranked = exp.map((v, i) => ({ label: model.classes[i], probability: v / total }))
    .sort((a, b) => b.probability - a.probability);
  const unsure = ranked[0].probability < model.minConfidence;
  show({ ranked, mnist }, unsure ? `Unsure: the model is less than ${(model.minConfidence * 100).toFixed(0)} % sure; ` +
    "its best guess is shown." : "");
}

function show(result, message = "") {
  $("message").textContent = message;
  $("digit").textContent = result ? result.ranked[0].label : "–";
  $("top3").replaceChildren(...(result ? result.ranked.slice(0, 3) : []).map(({ label, probability }) => {
    const row = document.createElement("li"), bar = document.createElement("span"), value = document.createElement("span");
    bar.className = "bar";
    bar.style.width = `${Math.max(1, probability * 100)}%`;
    value.textContent = `${(probability * 100).toFixed(1)} %`;
    row.append(label, bar, value);
    return row;
  }));
  const seen = $("seen").getContext("2d"), image = seen.createImageData(28, 28);
  (result ? result.mnist : new Uint8Array(784)).forEach((v, i) => image.data.set([v, v, v, 255], 4 * i));
  seen.putImageData(image, 0, 0);
}

async function fetchOk(path, what) {
  const response = await fetch(path, { cache: "no-cache" });
  if (!response.ok) throw new Error(`${what} (${path}: HTTP ${response.status})`);
  return response;
}

let latest = null;
async function loadModel(variant) {
  const path = `outputs/${latest.models[variant].onnx}`;
  const bytes = new Uint8Array(await (await fetchOk(path, `the ${variant} model is missing`)).arrayBuffer());
  const metadata = metadataOf(bytes);
  const [scale, mean, std] = ["preprocess.scale", "preprocess.mean", "preprocess.std"].map((k) => Number(metadata[k]));
  if (![scale, std].every((v) => v > 0) || !Number.isFinite(mean)) {
    throw new Error(`${path} lacks this job's metadata (preprocess.scale, mean and std: docs/model-contract.md)`);
  }
  // A model exported before calibration has neither key: its raw softmax, never unsure (lenet_client.contract).
  // A plain decimal number, the same rule as lenet_client.contract.calibration's.
  const decimal = (text, absent) => (text === undefined ? absent : /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(text) ? Number(text) : NaN);
  const temperature = decimal(metadata["calibration.temperature"], 1), minConfidence = decimal(metadata["calibration.min_confidence"], 0);
  if (!(temperature >= 0.01 && temperature <= 100 && minConfidence >= 0 && minConfidence <= 1)) { // as lenet_client.contract.TEMPERATURES
    throw new Error(`${path} has a calibration this page cannot use (calibration.temperature and min_confidence: docs/model-contract.md)`);
  }
  const digits = "0,1,2,3,4,5,6,7,8,9"; // output i is digit i (lenet_client.contract.check_classes)
  if ((metadata["model.classes"] ?? digits) !== digits) {
    throw new Error(`${path} labels its outputs ${metadata["model.classes"]}, not the digits 0-9 in order (docs/model-contract.md)`);
  }
  const session = await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"] });
  model = { session, metadata, variant, scale, mean, std, temperature, minConfidence, classes: digits.split(",") };
  const accuracy = Number(metadata["metrics.test_accuracy"]);
  const method = metadata["preprocess.method"];
  say(`Model ${variant} of run ${latest.run_id}` + (accuracy ? `, ${(accuracy * 100).toFixed(2)} % on MNIST's test set` : "") +
    (method && method !== METHOD ? ` (published for preprocessing ${method}; this page does ${METHOD})` : "") + ".");
  document.body.dataset.model = variant; // for tests: which model is loaded
}

async function start() {
  clearPad();
  setupPad();
  $("clear").addEventListener("click", clearPad);
  $("file").addEventListener("change", () => $("file").files[0] && readFile($("file").files[0]));
  // A picture may be dropped anywhere on the page.
  document.body.addEventListener("dragover", (event) => { event.preventDefault(); pad.classList.add("dragging"); });
  document.body.addEventListener("dragleave", () => pad.classList.remove("dragging"));
  document.body.addEventListener("drop", (event) => {
    event.preventDefault();
    pad.classList.remove("dragging");
    const file = event.dataTransfer.files[0];
    if (file) readFile(file);
  });
  try {
    const response = await fetch("outputs/latest.json", { cache: "no-cache" });
    if (response.status === 404) {
      say("No model is published yet: run the job (make run, or docker compose run train), then reload this page.", true);
      document.body.dataset.model = "none";
      return;
    }
    if (!response.ok) throw new Error(`outputs/latest.json: HTTP ${response.status}`);
    latest = await response.json();
    const variants = Object.keys(latest.models ?? {}).filter((v) => latest.models[v].onnx);
    if (!variants.length) throw new Error("outputs/latest.json names no ONNX model");
    $("variant").replaceChildren(...variants.map((v) => new Option(v, v)));
    $("variant").addEventListener("change", async () => {
      try {
        await loadModel($("variant").value);
        if (drawn) readPicture(padPicture());
      } catch (error) {
        say(`Could not load the model: ${error.message}`, true);
      }
    });
    await loadModel(variants[0]);
  } catch (error) {
    say(`Could not load the published model: ${error.message}`, true);
    document.body.dataset.model = "none";
  }
}

start();
