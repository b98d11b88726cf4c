// Any picture of one digit -> the 28x28 picture the model was trained on: docs/model-contract.md, "Any picture of
// one digit -> 28x28", ported from client/lenet_client/preprocess.py and ink.py (the reference) step for step.
// The arithmetic is the reference's, in the same order, down to how numpy adds (pairwise along a row, one row after
// another down a column), so that the bytes come out the same: tests/test_web.py checks them against Python's.
// No dependencies; runs in the browser and in node.
//
//   toMnist({width, height, data}) -> Uint8Array(784), white ink on black; `data` is RGBA bytes (a canvas's
//                                     ImageData). Throws NoDigitError when the picture holds no digit.
//   toInput(mnist, scale, mean, std) -> Float32Array(784), the model's input

export const METHOD = "mnist-fit-20-center-of-mass-28 v5"; // the ONNX metadata's preprocess.method
const MAX_PIXELS = 40_000_000, MIN_SIDE = 8, WORK_SIDE = 256, FINE_SIDE = 80;
const MIN_STROKE = 1.5, BOX = 20, FIELD = 28, CENTER = 14.0, OPAQUE_PICTURE = 0.7;
const BORDER_BAND = 0.05, BORDER_UNIFORM = 0.5, MIN_CONTRAST = 0.05, MIN_COHERENCE = 0.5, NOISE_SIGMAS = 5;
const FRAME_MARGIN = 0.08, FRAME_COVERAGE = 0.8, FRAME_SIDES = 3, FRAME_GAP = 0.2, FRAME_GAPS = 2, MIN_PART = 0.05;
const CORNER = 0.1;

export class NoDigitError extends Error {
  constructor(message) { super(message); this.name = "NoDigitError"; }
}

// A picture as numbers: h rows of w float64 values, row after row.
const plane = (h, w, d = new Float64Array(h * w)) => ({ h, w, d });
const round = (x) => Math.floor(x + 0.5);
const map = (p, f) => plane(p.h, p.w, p.d.map(f));

// numpy's sum of a contiguous run: pairwise, in blocks of 8 (numpy/_core/src/umath/loops_utils.h.src).
function pairwiseSum(a, start = 0, n = a.length - start) {
  if (n < 8) {
    let res = 0;
    for (let i = 0; i < n; i++) res += a[start + i];
    return res;
  }
  if (n <= 128) {
    const r = Array.from({ length: 8 }, (_, j) => a[start + j]);
    let i = 8;
    for (; i < n - (n % 8); i += 8) for (let j = 0; j < 8; j++) r[j] += a[start + i + j];
    let res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; i++) res += a[start + i];
    return res;
  }
  let n2 = Math.floor(n / 2);
  n2 -= n2 % 8;
  return pairwiseSum(a, start, n2) + pairwiseSum(a, start + n2, n - n2);
}
const sum = (a) => pairwiseSum(a);
const rowSums = (p) => Float64Array.from({ length: p.h }, (_, r) => pairwiseSum(p.d, r * p.w, p.w));
function columnSums(p) { // numpy adds the rows one after another
  const out = p.d.slice(0, p.w);
  for (let r = 1; r < p.h; r++) for (let c = 0; c < p.w; c++) out[c] += p.d[r * p.w + c];
  return out;
}
const times = (a, f) => a.map((v, i) => v * f(i));

const sorted = (values) => Float64Array.from(values).sort();
function percentile(values, q) { // numpy's default ("linear") method
  const v = sorted(values), idx = (q / 100) * (v.length - 1);
  const lo = Math.floor(idx), hi = Math.min(lo + 1, v.length - 1), t = idx - lo, diff = v[hi] - v[lo];
  return t >= 0.5 ? v[hi] - diff * (1 - t) : v[lo] + diff * t;
}
function median(values) {
  const v = sorted(values), n = v.length;
  return n % 2 ? v[(n - 1) / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}
const select = (p, keep) => p.d.filter((_, i) => keep(i));

function fitSize(h, w, side) {
  const scale = side / Math.max(h, w);
  return [Math.max(1, Math.floor(h * scale + 0.5)), Math.max(1, Math.floor(w * scale + 0.5))];
}

// Area averaging along one axis (0: down, 1: across) to `size`, read off the running sum.
function areaAverage(p, size, axis) {
  const length = axis === 0 ? p.h : p.w, lanes = axis === 0 ? p.w : p.h, step = length / size;
  const out = axis === 0 ? plane(size, p.w) : plane(p.h, size);
  const at = (lane, i) => (axis === 0 ? p.d[i * p.w + lane] : p.d[lane * p.w + i]);
  const running = new Float64Array(length + 1), atEdges = new Float64Array(size + 1);
  for (let lane = 0; lane < lanes; lane++) {
    for (let i = 0; i < length; i++) running[i + 1] = running[i] + at(lane, i);
    for (let e = 0; e <= size; e++) {
      const edge = e * step, whole = Math.min(Math.floor(edge), length - 1);
      atEdges[e] = running[whole] + (edge - whole) * at(lane, whole);
    }
    for (let i = 0; i < size; i++) {
      const value = (atEdges[i + 1] - atEdges[i]) / step;
      if (axis === 0) out.d[i * p.w + lane] = value; else out.d[lane * size + i] = value;
    }
  }
  return out;
}
const resizeArea = (p, h, w) => areaAverage(areaAverage(p, h, 0), w, 1);
function workingSize(p) {
  const [h, w] = fitSize(p.h, p.w, Math.min(WORK_SIDE, Math.max(p.h, p.w)));
  return h === p.h && w === p.w ? p : areaAverage(areaAverage(p, w, 1), h, 0);
}

// Step 3: gray 0-1 at working size, and whether it is a drawing on a transparent canvas.
function grayscale({ width, height, data }) {
  const luma = plane(height, width), alpha = plane(height, width);
  let opaque = true;
  for (let i = 0; i < width * height; i++) {
    luma.d[i] = (19595 * data[4 * i] + 38470 * data[4 * i + 1] + 7471 * data[4 * i + 2] + 32768) >> 16;
    alpha.d[i] = data[4 * i + 3];
    if (data[4 * i + 3] !== 255) opaque = false;
  }
  const gray = map(workingSize(luma), (v) => v / 255);
  if (opaque) return [gray, false];
  const a = map(workingSize(alpha), (v) => v / 255);
  if (sum(a.d) / a.d.length >= OPAQUE_PICTURE) {
    const m = median(select(gray, (i) => a.d[i] >= 0.5));
    return [map(gray, (g, i) => a.d[i] * g + (1 - a.d[i]) * m), false];
  }
  const total = sum(a.d);
  if (total === 0) return [map(gray, () => 1), true];
  const paper = sum(gray.d.map((g, i) => g * a.d[i])) / total < 0.5 ? 1.0 : 0.0;
  return [map(gray, (g, i) => 1 - a.d[i] * Math.abs(g - paper)), true];
}

function windowMax(p, window) { // edges repeat the nearest pixel
  const half = Math.floor(window / 2);
  let out = p;
  for (const axis of [0, 1]) {
    const src = out, next = plane(p.h, p.w);
    for (let r = 0; r < p.h; r++) for (let c = 0; c < p.w; c++) {
      let best = -Infinity;
      for (let o = -half; o <= half; o++) {
        const rr = axis === 0 ? Math.min(Math.max(r + o, 0), p.h - 1) : r;
        const cc = axis === 1 ? Math.min(Math.max(c + o, 0), p.w - 1) : c;
        best = Math.max(best, src.d[rr * p.w + cc]);
      }
      next.d[r * p.w + c] = best;
    }
    out = next;
  }
  return out;
}
const windowMin = (p, window) => map(windowMax(map(p, (v) => -v), window), (v) => -v);
function padded(p, r) {
  const out = plane(p.h + 2 * r, p.w + 2 * r);
  for (let y = 0; y < p.h; y++) out.d.set(p.d.subarray(y * p.w, (y + 1) * p.w), (y + r) * out.w + r);
  return out;
}
function cropped(p, top, left, h, w) {
  const out = plane(h, w);
  for (let y = 0; y < h; y++) out.d.set(p.d.subarray((top + y) * p.w + left, (top + y) * p.w + left + w), y * w);
  return out;
}

function otsu(values) {
  const counts = new Float64Array(256);
  for (const v of values) counts[Math.min(255, Math.max(0, Math.floor(v * 255 + 0.5)))] += 1;
  const weight = new Float64Array(256), mass = new Float64Array(256);
  for (let k = 0; k < 256; k++) {
    weight[k] = (k ? weight[k - 1] : 0) + counts[k];
    mass[k] = (k ? mass[k - 1] : 0) + counts[k] * k;
  }
  let best = 0, bestValue = -Infinity;
  for (let k = 0; k < 256; k++) {
    const spread = mass[255] * weight[k] - mass[k] * weight[255];
    let between = (spread * spread) / (weight[k] * (weight[255] - weight[k]));
    if (!Number.isFinite(between)) between = -1;
    if (between > bestValue) { best = k; bestValue = between; }
  }
  return (best + 0.5) / 255;
}

// Step 4: the ink made bright. A uniform band decides; else the four corners vote (a digit cropped to its own box
// leaves most of them empty), unless a frame (either side of Otsu's split) or a tie: then both medians must say light.
function oriented(gray) {
  const low = percentile(gray.d, 0.1), high = percentile(gray.d, 99.9);
  const band = Math.max(2, round(BORDER_BAND * Math.min(gray.h, gray.w)));
  const inBand = (i) => {
    const r = Math.floor(i / gray.w), c = i % gray.w;
    return !(r >= band && r < gray.h - band && c >= band && c < gray.w - band);
  };
  const border = select(gray, inBand);
  const spreadLow = percentile(border, 10), level = percentile(border, 50), spreadHigh = percentile(border, 90);
  const inkIsLight = (paper) => high - paper > paper - low;
  if (spreadHigh - spreadLow <= BORDER_UNIFORM * (high - low)) return inkIsLight(level) ? gray : map(gray, (v) => 1 - v);
  const side = Math.max(2, round(CORNER * Math.min(gray.h, gray.w)));
  const corners = [[0, 0], [0, gray.w - side], [gray.h - side, 0], [gray.h - side, gray.w - side]];
  const votes = corners.filter(([top, left]) => inkIsLight(median(cropped(gray, top, left, side, side).d))).length;
  const light = votes === 2 || eitherSideFramed(gray) ? inkIsLight(level) && inkIsLight(median(gray.d)) : votes > 2;
  return light ? gray : map(gray, (v) => 1 - v);
}

// Step 5: the paper's shading, a plane fitted to the paper's side of Otsu's split, subtracted.
function flattened(ink) {
  const { h, w } = ink, t = otsu(ink.d);
  const paper = map(ink, (v) => (v <= t ? 1 : 0)), level = map(ink, (v, i) => paper.d[i] * v);
  const y = (r) => r / h, x = (c) => c / w;
  const rows = rowSums(paper), cols = columnSums(paper), rowLevel = rowSums(level), colLevel = columnSums(level);
  const cross = sum(times(rowSums(map(paper, (v, i) => v * x(i % w))), y));
  const n00 = sum(rows), n01 = sum(times(rows, y)), n02 = sum(times(cols, x));
  const n11 = sum(times(times(rows, y), y)), n12 = cross, n22 = sum(times(times(cols, x), x));
  const t0 = sum(rowLevel), t1 = sum(times(rowLevel, y)), t2 = sum(times(colLevel, x));
  const c00 = n11 * n22 - n12 * n12, c01 = n02 * n12 - n01 * n22, c02 = n01 * n12 - n02 * n11;
  const c11 = n00 * n22 - n02 * n02, c12 = n01 * n02 - n00 * n12, c22 = n00 * n11 - n01 * n01;
  const det = n00 * c00 + n01 * c01 + n02 * c02;
  if (det <= 1e-9 * n00 ** 3) {
    const mean = n00 ? t0 / n00 : 0.0;
    return map(ink, (v) => v - mean);
  }
  const a = (c00 * t0 + c01 * t1 + c02 * t2) / det;
  const b = (c01 * t0 + c11 * t1 + c12 * t2) / det;
  const c = (c02 * t0 + c12 * t1 + c22 * t2) / det;
  return map(ink, (v, i) => v - ((a + b * y(Math.floor(i / w))) + c * x(i % w)));
}

function noise(ink) {
  if (ink.w < 2) return 0; // one pixel wide: no neighbours across, as lenet_client.ink.noise
  const across = [];
  for (let r = 0; r < ink.h; r++) for (let c = 1; c < ink.w; c++) across.push(ink.d[r * ink.w + c] - ink.d[r * ink.w + c - 1]);
  const center = median(across);
  return (1.4826 * median(across.map((d) => Math.abs(d - center)))) / Math.sqrt(2);
}

function coherence(mask) {
  let marked = 0, touching = 0;
  for (let r = 0; r < mask.h; r++) for (let c = 0; c < mask.w; c++) {
    if (!mask.d[r * mask.w + c]) continue;
    marked++;
    let neighbours = 0;
    for (let dy = -1; dy <= 1; dy++) for (let dx = -1; dx <= 1; dx++) {
      const rr = r + dy, cc = c + dx;
      if ((dy || dx) && rr >= 0 && rr < mask.h && cc >= 0 && cc < mask.w) neighbours += mask.d[rr * mask.w + cc];
    }
    if (neighbours >= 2) touching++;
  }
  return marked ? touching / marked : 0;
}

function segments(profile) { // [start, end) of the runs of nonzero entries
  const runs = [];
  for (let i = 0; i < profile.length; i++) {
    if (profile[i] > 0 && (i === 0 || !(profile[i - 1] > 0))) runs.push([i, i]);
    if (profile[i] > 0) runs[runs.length - 1][1] = i + 1;
  }
  return runs;
}

function frameLines(cover) { // [[start, end), paper inside] of a line along the side where cover starts
  const margin = Math.max(4, Math.trunc(FRAME_MARGIN * cover.length));
  const start = cover.slice(0, margin).findIndex((v) => v >= FRAME_COVERAGE);
  if (start < 0) return null;
  const after = cover.slice(start).findIndex((v) => v < FRAME_COVERAGE);
  if (after < 0) return null;
  return [[start, start + after], cover[start + after] <= FRAME_GAP];
}

function eitherSideFramed(gray) {
  const t = otsu(gray.d);
  return frameSides(map(gray, (v) => (v > t ? 1 : 0))) !== null || frameSides(map(gray, (v) => (v <= t ? 1 : 0))) !== null;
}
// Step 7's frame: its lines (axis, [start, end], paper inside) along at least FRAME_SIDES sides, FRAME_GAPS of them
// with paper inside; else null.
function frameSides(mask) {
  const found = [];
  for (const axis of [0, 1]) {
    const counts = axis === 0 ? rowSums(mask) : columnSums(mask), across = axis === 0 ? mask.w : mask.h;
    const cover = counts.map((v) => v / across), size = cover.length;
    const near = frameLines(cover);
    if (near) found.push([axis, ...near]);
    const far = frameLines(cover.slice().reverse());
    if (far) found.push([axis, [size - far[0][1], size - far[0][0]], far[1]]);
  }
  if (found.length < FRAME_SIDES || found.filter(([, , gap]) => gap).length < FRAME_GAPS) return null;
  return found;
}
function withoutFrame(mask) {
  const found = frameSides(mask);
  if (found === null) return mask;
  const out = plane(mask.h, mask.w, mask.d.slice());
  for (const [axis, [start, end]] of found) clearLines(out, axis, start, end);
  return out;
}
function clearLines(mask, axis, start, end) {
  for (let k = start; k < end; k++) {
    if (axis === 0) mask.d.fill(0, k * mask.w, (k + 1) * mask.w);
    else for (let r = 0; r < mask.h; r++) mask.d[r * mask.w + k] = 0;
  }
}

function withoutSpecks(mask, ink) {
  const out = plane(mask.h, mask.w, mask.d.slice());
  for (const axis of [0, 1]) {
    const kept = map(out, (m, i) => (m ? ink.d[i] : 0));
    const mass = axis === 0 ? rowSums(kept) : columnSums(kept), total = sum(mass);
    for (const [start, end] of segments(mass)) {
      if (pairwiseSum(mass, start, end - start) < MIN_PART * total) clearLines(out, axis, start, end);
    }
  }
  return out;
}

// Steps 4-8: the digit's ink 0-1, everything that is not the digit 0.
function digitInk(gray, darkInk) {
  let ink = darkInk ? map(gray, (v) => 1 - v) : oriented(gray);
  ink = flattened(ink);
  let threshold = otsu(ink.d.map((v) => Math.min(1, Math.max(0, v))));
  const paperSide = ink.d.filter((v) => v <= threshold);
  if (!paperSide.length) throw new NoDigitError("no ink found: the picture has no contrast (it is one level everywhere)");
  const paperLevel = median(paperSide);
  threshold = Math.max(threshold, paperLevel + NOISE_SIGMAS * noise(ink));
  const strong = map(ink, (v) => (v > threshold ? 1 : 0)), marks = ink.d.filter((v) => v > threshold);
  const level = marks.length ? median(marks) : paperLevel;
  const contrast = marks.length ? percentile(marks, 90) - paperLevel : 0;
  if (contrast < MIN_CONTRAST) {
    throw new NoDigitError(`no ink found: the picture has no contrast (its darkest marks stand ${contrast.toFixed(2)} ` +
      `from the paper, of a full range of 1; a digit needs at least ${MIN_CONTRAST})`);
  }
  const share = coherence(strong);
  if (share < MIN_COHERENCE) {
    throw new NoDigitError(`no ink found: only noise stands out from the paper (of the marks above the threshold, ` +
      `${Math.round(100 * share)} % touch two others; a stroke's do, at least ${100 * MIN_COHERENCE} %)`);
  }
  const floor = (paperLevel + threshold) / 2;
  const soft = map(ink, (v) => Math.min(1, Math.max(0, (v - floor) / (level - floor))));
  const mask = withoutSpecks(withoutFrame(strong), soft);
  if (!mask.d.some((m) => m)) throw new NoDigitError("no ink found inside the frame");
  const grown = windowMax(mask, 3);
  return map(soft, (v, i) => (grown.d[i] > 0 ? v : 0));
}

function strokeWidth(ink) {
  const strokes = map(ink, (v) => (v >= 0.5 ? 1 : 0)), inner = windowMin(strokes, 3);
  let area = 0, boundary = 0;
  strokes.d.forEach((s, i) => { area += s; if (s && !(inner.d[i] > 0)) boundary++; });
  return boundary ? (2 * area) / boundary : 0;
}

// Step 9's stroke widths: thin strokes grown to MNIST's (bold ones are left as they are).
function stroked(fine) {
  const width = (strokeWidth(fine) * BOX) / FINE_SIDE;
  if (width < MIN_STROKE) {
    const radius = Math.floor((((MIN_STROKE - width) / 2) * FINE_SIDE) / BOX + 0.5);
    return radius ? windowMax(padded(fine, radius), 2 * radius + 1) : fine;
  }
  return fine;
}

// Steps 10-11: the strongest ink to 1, the center of mass to (14, 14), quantized.
function centered(patch) {
  const top = patch.d.reduce((m, v) => Math.max(m, v), -Infinity);
  patch = map(patch, (v) => v / top);
  const mass = sum(patch.d);
  const centerRow = sum(times(rowSums(patch), (i) => i)) / mass;
  const centerCol = sum(times(columnSums(patch), (i) => i)) / mass;
  const clamp = (v, hi) => Math.min(Math.max(v, 0), hi);
  const row0 = clamp(Math.floor(CENTER - centerRow + 0.5), FIELD - patch.h);
  const col0 = clamp(Math.floor(CENTER - centerCol + 0.5), FIELD - patch.w);
  const field = new Uint8Array(FIELD * FIELD);
  for (let r = 0; r < patch.h; r++) for (let c = 0; c < patch.w; c++) {
    field[(row0 + r) * FIELD + col0 + c] = Math.floor(patch.d[r * patch.w + c] * 255 + 0.5);
  }
  return field;
}

export function toMnist(image) {
  const { width, height } = image;
  if (width * height > MAX_PIXELS) {
    throw new NoDigitError(`too large: ${width}x${height} pixels (allowed: at most ${MAX_PIXELS.toLocaleString("en")})`);
  }
  if (Math.min(width, height) < MIN_SIDE) {
    throw new NoDigitError(`too small to hold a digit: ${width}x${height} pixels (allowed: at least ${MIN_SIDE}x${MIN_SIDE})`);
  }
  const [gray, drawing] = grayscale(image);
  const ink = digitInk(gray, drawing);
  let top = ink.h, bottom = -1, left = ink.w, right = -1;
  ink.d.forEach((v, i) => {
    if (v === 0) return;
    const r = Math.floor(i / ink.w), c = i % ink.w;
    top = Math.min(top, r); bottom = Math.max(bottom, r); left = Math.min(left, c); right = Math.max(right, c);
  });
  const crop = cropped(ink, top, left, bottom - top + 1, right - left + 1);
  const fine = stroked(resizeArea(crop, ...fitSize(crop.h, crop.w, FINE_SIDE)));
  return centered(resizeArea(fine, ...fitSize(fine.h, fine.w, BOX)));
}

export function toInput(mnist, scale, mean, std) {
  // float32 throughout, as numpy computes the reference's (float32 pixels with Python floats)
  const f = Math.fround;
  return Float32Array.from(mnist, (v) => f(f(f(v * f(scale)) - f(mean)) / f(std)));
}
