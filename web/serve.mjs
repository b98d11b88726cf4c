// Serves the page, onnxruntime-web from the local npm install, and the job's outputs folder, read-only:
//
//   node web/serve.mjs [--outputs DIR] [--port N] [--host ADDRESS]
//
// DIR defaults to $LENET_OUTPUT_DIR, else ./outputs; the page reads DIR/latest.json as /outputs/latest.json.
// Port 8080 and host 127.0.0.1 by default (0 picks a free port; the line printed at start names it). Nothing but
// GET and HEAD is answered, and only files under the three folders are served.
import { createServer } from "node:http";
import { createReadStream, statSync } from "node:fs";
import { resolve, sep, extname } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const TYPES = {
  ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8", ".json": "application/json", ".wasm": "application/wasm", ".png": "image/png",
  ".onnx": "application/octet-stream", ".svg": "image/svg+xml",
};

function fail(message) {
  console.error(`lenet-web: ${message}`);
  process.exit(2);
}

let options;
try {
  ({ values: options } = parseArgs({
    options: { outputs: { type: "string" }, port: { type: "string", default: "8080" }, host: { type: "string", default: "127.0.0.1" },
               help: { type: "boolean", short: "h" } },
  }));
} catch (error) {
  fail(`${error.message} (allowed: --outputs DIR, --port N, --host ADDRESS, --help)`);
}
if (options.help) {
  console.log(`usage: node web/serve.mjs [--outputs DIR] [--port N] [--host ADDRESS]

Serves the browser app that reads digits with the run the job published in DIR, offline.
  --outputs DIR     the job's outputs folder (default: $LENET_OUTPUT_DIR, else ./outputs)
  --port N          0-65535 (default 8080; 0 picks a free port, named in the line printed at start)
  --host ADDRESS    the address to listen on (default 127.0.0.1)`);
  process.exit(0);
}
const port = Number(options.port);
if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`--port must be a whole number 0-65535, not ${options.port}`);

const here = resolve(fileURLToPath(new URL(".", import.meta.url)));
const outputs = resolve(options.outputs ?? process.env.LENET_OUTPUT_DIR ?? "outputs");
const ort = resolve(here, "node_modules/onnxruntime-web/dist");
try {
  statSync(`${ort}/ort.wasm.min.mjs`);
} catch {
  fail(`onnxruntime-web is not installed in ${here}/node_modules (run: npm ci --prefix web)`);
}
const PAGE = new Set(["index.html", "app.js", "preprocess.js", "onnx-metadata.js", "style.css"]);

function fileFor(pathname) {
  const parts = pathname.split("/").filter(Boolean).map(decodeURIComponent);
  if (parts.some((p) => p === ".." || p.includes("\0") || p.includes("/") || p.includes("\\"))) return null;
  let root, rest;
  if (parts.length === 0) [root, rest] = [here, ["index.html"]];
  else if (parts[0] === "ort") [root, rest] = [ort, parts.slice(1)];
  else if (parts[0] === "outputs") [root, rest] = [outputs, parts.slice(1)];
  else if (parts.length === 1 && PAGE.has(parts[0])) [root, rest] = [here, parts];
  else return null;
  const path = resolve(root, ...rest);
  return path.startsWith(root + sep) ? path : null;
}

const server = createServer((request, response) => {
  if (request.method !== "GET" && request.method !== "HEAD") {
    response.writeHead(405, { Allow: "GET, HEAD" }).end("read-only\n");
    return;
  }
  let path;
  try {
    path = fileFor(new URL(request.url, "http://localhost").pathname);
  } catch {
    path = null; // a malformed %-escape
  }
  let size;
  try {
    const info = path && statSync(path);
    if (info && info.isFile()) size = info.size;
  } catch {
    // missing or unreadable: 404 below
  }
  if (size === undefined) {
    response.writeHead(404, { "Content-Type": "text/plain" }).end("not found\n");
    return;
  }
  // latest.json moves when the job publishes; everything else is immutable once written or part of the page.
  response.writeHead(200, { "Content-Type": TYPES[extname(path)] ?? "application/octet-stream",
    "Content-Length": size, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff" });
  if (request.method === "HEAD") {
    response.end();
    return;
  }
  createReadStream(path).on("error", () => response.destroy()).pipe(response);
});
server.on("error", (error) => fail(`cannot listen on ${options.host}:${port}: ${error.message}`));
server.listen(port, options.host, () => {
  const { address, port: bound } = server.address();
  const host = address.includes(":") ? `[${address}]` : address;
  console.log(`lenet-web: serving http://${host}:${bound}/ with the models published in ${outputs}`);
});
for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => {
  server.close(() => process.exit(0));
  server.closeAllConnections();
});
