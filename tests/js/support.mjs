// Test support for the JavaScript runtimes: the demo data and its lake made by the native
// CLI, a real Range-capable HTTP server (tests/rangeserve.py) serving the repository, an S3
// server (moto), and the native CLI's answers that every runtime must match.
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
/** Generated data lives inside the repository so that one server root serves it and the package. */
export const WORK = path.join(REPO, 'tests/js/.work');

const targetDir = process.env.CARGO_TARGET_DIR || path.join(os.homedir(), '.cache/medallion/target');

/** The native CLI: $MEDALLION_BIN, else the debug build in the target dir. */
export function nativeBin() {
  const bin = process.env.MEDALLION_BIN || path.join(targetDir, 'debug/medallion');
  if (!fs.existsSync(bin)) {
    throw new Error(`no native medallion at ${bin}: run \`cargo build --bin medallion\` or set MEDALLION_BIN`);
  }
  return bin;
}

export function python() {
  const venv = process.env.MEDALLION_VENV || path.join(os.homedir(), '.cache/medallion/venv');
  const py = path.join(venv, 'bin/python');
  return fs.existsSync(py) ? py : 'python3';
}

/**
 * The retail demo's source files and the lake the native CLI builds from them (once per
 * process; scale 0.2, fixed seed, so every runtime sees the same bytes).
 */
export function demoFixture() {
  const dir = path.join(WORK, 'retail');
  const lake = path.join(WORK, 'lake');
  const stamp = path.join(WORK, 'fixture.ok');
  if (!fs.existsSync(stamp)) {
    fs.rmSync(WORK, { recursive: true, force: true });
    fs.mkdirSync(WORK, { recursive: true });
    execFileSync(nativeBin(), ['demo', '--dir', dir, '--lake', lake, '--scale', '0.2'], { stdio: 'pipe' });
    fs.writeFileSync(stamp, 'ok');
  }
  const files = [];
  const walk = (d) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else files.push(path.relative(REPO, p));
    }
  };
  walk(path.join(dir, 'data'));
  return { dir, lake, spec: fs.readFileSync(path.join(dir, 'pipeline.toml'), 'utf8'), sourceFiles: files.sort() };
}

/** Starts tests/rangeserve.py on a free port, serving the repository. */
export async function startServer({ latencyMs = 0, noStore = false, cacheControl = null, root = REPO } = {}) {
  const portFile = path.join(os.tmpdir(), `rangeserve-${process.pid}-${Date.now()}.port`);
  const args = [path.join(REPO, 'tests/rangeserve.py'), root, '--port', '0', '--port-file', portFile, '--latency-ms', String(latencyMs)];
  if (noStore) args.push('--no-store');
  if (cacheControl) args.push('--cache-control', cacheControl);
  const proc = spawn(python(), args, { stdio: ['ignore', 'ignore', 'inherit'] });
  for (let i = 0; i < 200 && !fs.existsSync(portFile); i++) await new Promise((r) => setTimeout(r, 50));
  if (!fs.existsSync(portFile)) {
    proc.kill();
    throw new Error('tests/rangeserve.py did not start');
  }
  await new Promise((r) => setTimeout(r, 50));
  const port = Number(fs.readFileSync(portFile, 'utf8').trim());
  fs.rmSync(portFile, { force: true });
  const base = `http://127.0.0.1:${port}`;
  return {
    base,
    port,
    async stats(reset = true) {
      return (await fetch(`${base}/__stats${reset ? '?reset=1' : ''}`)).json();
    },
    async fault(mode) {
      await fetch(`${base}/__fault?mode=${mode}`);
    },
    stop: () => new Promise((res) => {
      proc.once('exit', res);
      proc.kill();
    }),
  };
}

/** The native CLI's rows for a case (tables as [name, location, kind]); `env` adds variables. */
export function nativeRows(c, env = {}) {
  const args = ['query', c.sql, '--format', 'json'];
  for (const [name, location, kind] of c.tables) {
    args.push('--table', `${name}=${kind === 'delta' ? 'delta:' : ''}${location}`);
  }
  const out = execFileSync(nativeBin(), args, {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  return JSON.parse(out.trim() || '[]');
}

/** A TCP port that was free a moment ago on 127.0.0.1. */
export const freePort = () =>
  new Promise((res, rej) => {
    const s = net.createServer();
    s.on('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });

/**
 * Starts moto's S3 server (`pip install 'moto[server]'` into the venv) on a free port. Returns
 * its endpoint, the environment that points the native CLI at it, what the npm package's `s3`
 * option needs, a SigV4 client (aws4fetch) for the test's own requests, and `upload`.
 */
export async function startMoto() {
  const py = python();
  try {
    execFileSync(py, ['-c', 'import moto.server'], { stdio: 'ignore' });
  } catch {
    throw new Error(`moto is not installed for ${py}: pip install 'moto[server]'`);
  }
  const port = await freePort();
  const proc = spawn(py, ['-m', 'moto.server', '-H', '127.0.0.1', '-p', String(port)], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const log = [];
  proc.stderr.on('data', (d) => log.push(String(d)));
  const endpoint = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    try {
      if ((await fetch(`${endpoint}/`)).ok) break;
    } catch {
      // not listening yet
    }
    if (i > 300 || proc.exitCode !== null) {
      proc.kill();
      throw new Error(`moto did not start:\n${log.join('').slice(-2000)}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  const keys = { accessKeyId: 'medallion-test', secretAccessKey: 'medallion-test-secret', region: 'us-east-1' };
  const { AwsClient } = await import('aws4fetch');
  const client = new AwsClient({ ...keys, service: 's3', retries: 0 });
  const request = async (method, pathAndQuery, body) => {
    const r = await client.fetch(`${endpoint}/${pathAndQuery}`, { method, body });
    if (!r.ok) throw new Error(`${method} ${pathAndQuery}: HTTP ${r.status} ${await r.text()}`);
    return r;
  };
  return {
    endpoint,
    keys,
    client,
    /** `s3` option of Medallion.create with keys. */
    s3: { endpoint, ...keys },
    /** What the native CLI reads its S3 settings from. */
    env: {
      AWS_ENDPOINT_URL: endpoint,
      AWS_ACCESS_KEY_ID: keys.accessKeyId,
      AWS_SECRET_ACCESS_KEY: keys.secretAccessKey,
      AWS_REGION: keys.region,
    },
    request,
    /** "The app's server": presigns exactly the request a page describes (its `sign` callback). */
    async presign({ method, url, headers }) {
      const r = await client.sign(url, { method, headers, aws: { signQuery: true, allHeaders: false } });
      return { url: r.url, headers };
    },
    createBucket: (bucket) => request('PUT', bucket),
    /** Uploads every file below `dir` to s3://bucket/prefix/<relative path>. */
    async upload(dir, bucket, prefix) {
      const files = [];
      const walk = (d) => {
        for (const e of fs.readdirSync(d, { withFileTypes: true })) {
          const p = path.join(d, e.name);
          if (e.isDirectory()) walk(p);
          else files.push(p);
        }
      };
      walk(dir);
      for (const f of files) await request('PUT', `${bucket}/${prefix}/${path.relative(dir, f)}`, fs.readFileSync(f));
      return files.length;
    },
    /** Keys below a prefix (one ListObjectsV2 page is enough for these tests' checks). */
    async listKeys(bucket, prefix) {
      const xml = await (await request('GET', `${bucket}?list-type=2&prefix=${encodeURIComponent(prefix)}`)).text();
      return [...xml.matchAll(/<Key>([^<]*)<\/Key>/g)].map((m) => m[1]);
    },
    stop: () =>
      new Promise((res) => {
        if (proc.exitCode !== null) return res();
        proc.once('exit', res);
        proc.kill();
      }),
  };
}

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

/** Debian's Chromium with the flags this machine needs (no GPU, no background networking). */
export async function launchChromium() {
  if (!fs.existsSync(CHROMIUM)) throw new Error(`no browser at ${CHROMIUM}: apt-get install chromium (or set CHROMIUM)`);
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run', '--disable-quic'],
  });
}

/**
 * moto answers a CORS preflight with 403 unless the URL carries a presigned query (it cannot
 * tell which of its services an unsigned OPTIONS is for); a real bucket answers it from its
 * CORS configuration. This stands in for that in front of moto: preflights are answered here,
 * everything else passes through unchanged.
 */
export function corsProxy(target) {
  const to = new URL(target);
  const server = http.createServer((req, res) => {
    if (req.method === 'OPTIONS') {
      res.writeHead(204, {
        'access-control-allow-origin': req.headers.origin ?? '*',
        'access-control-allow-methods': 'GET, HEAD, PUT, DELETE',
        'access-control-allow-headers': req.headers['access-control-request-headers'] ?? '',
        'access-control-max-age': '600',
      });
      return res.end();
    }
    const upstream = http.request({ host: to.hostname, port: to.port, method: req.method, path: req.url, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode, r.headers);
      r.pipe(res);
    });
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => resolve({
      endpoint: `http://127.0.0.1:${server.address().port}`,
      stop: () => new Promise((r) => server.close(r)),
    }));
  });
}
