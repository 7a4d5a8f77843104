// A small static file server for the demo and the browser tests. Besides plain files it has
// test routes: /slow/<path> trickles the file out (to abort mid-download), /status/<code>,
// /gzip/<path> sends the file gzipped (Content-Encoding: gzip, Content-Length of the compressed
// bytes, as most servers and CDNs do) and /huge/<bytes> declares a Content-Length of <bytes>
// and trickles zeros until the client gives up. With `isolated`, every response carries the
// headers that make a page cross-origin isolated (COOP same-origin, COEP require-corp), so the
// package's threaded build can run; the demo is served that way.
import http from "node:http";
import fs from "node:fs";
import path from "node:path";
import zlib from "node:zlib";

const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json",
  ".wasm": "application/wasm",
  ".png": "image/png",
  ".safetensors": "application/octet-stream",
};

/** Starts a server; `roots` maps URL prefixes to folders ("/" must be one). */
export function startServer({ roots, port = 0, host = "127.0.0.1", isolated = false }) {
  const log = [];
  const coi = isolated ? { "cross-origin-opener-policy": "same-origin", "cross-origin-embedder-policy": "require-corp" } : {};
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, "http://x");
    log.push(url.pathname);
    let p = decodeURIComponent(url.pathname);
    const status = /^\/status\/(\d{3})/.exec(p);
    if (status) {
      res.writeHead(Number(status[1]), { "content-type": "text/plain", ...coi });
      res.end(`status ${status[1]}`);
      return;
    }
    const huge = /^\/huge\/(\d+)$/.exec(p);
    if (huge) {
      res.writeHead(200, { "content-type": "application/octet-stream", "content-length": huge[1], "cache-control": "no-store", ...coi });
      const timer = setInterval(() => res.write(Buffer.alloc(65536)), 20);
      res.on("close", () => clearInterval(timer));
      return;
    }
    const slow = p.startsWith("/slow/");
    if (slow) p = p.slice(5);
    const gzip = p.startsWith("/gzip/");
    if (gzip) p = p.slice(5);
    if (p.endsWith("/")) p += "index.html";
    const prefix = Object.keys(roots).sort((a, b) => b.length - a.length).find((k) => p.startsWith(k));
    const file = path.join(roots[prefix], p.slice(prefix.length));
    if (!file.startsWith(path.resolve(roots[prefix])) || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
      res.writeHead(404, { "content-type": "text/plain", ...coi });
      res.end("not found");
      return;
    }
    const body = gzip ? zlib.gzipSync(fs.readFileSync(file)) : fs.readFileSync(file);
    res.writeHead(200, {
      "content-type": TYPES[path.extname(file)] || "application/octet-stream",
      "content-length": body.length,
      "cache-control": "no-store",
      ...(gzip ? { "content-encoding": "gzip" } : {}),
      ...coi,
    });
    if (!slow) {
      res.end(body);
      return;
    }
    let off = 0;
    const timer = setInterval(() => {
      if (res.destroyed) return clearInterval(timer);
      const chunk = body.subarray(off, off + 4096);
      off += chunk.length;
      if (chunk.length) res.write(chunk);
      if (off >= body.length) {
        clearInterval(timer);
        res.end();
      }
    }, 50);
    res.on("close", () => clearInterval(timer));
  });
  return new Promise((resolve) => {
    server.listen(port, host, () => {
      const { port: p } = server.address();
      resolve({ server, url: `http://${host}:${p}`, log, close: () => new Promise((r) => { server.closeAllConnections?.(); server.close(() => r()); }) });
    });
  });
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const args = process.argv.slice(2);
  const get = (k, d) => (args.includes(k) ? args[args.indexOf(k) + 1] : d);
  const isolated = !args.includes("--not-isolated");
  const { url } = await startServer({ roots: { "/": path.resolve(get("--root", ".")) }, port: Number(get("--port", 8080)), isolated });
  console.log(`serving ${path.resolve(get("--root", "."))} at ${url}/${isolated ? " (cross-origin isolated: COOP/COEP)" : ""}`);
}
