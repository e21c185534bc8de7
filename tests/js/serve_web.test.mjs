// The HTTP side of `medallion serve`: the lake's files with Range semantics checked against the
// bytes on disk, the dashboard served at `/` showing the native CLI's numbers in headless
// Chromium (the npm package reading the lake from the same server), and a watched pipeline's
// alerts as Server-Sent Events and its last batch at /api/report.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { demoFixture, freePort, launchChromium, nativeBin, nativeRows } from './support.mjs';

const SHOTS = path.join(os.homedir(), '.cache/medallion');

/** `medallion serve` with its own ports; resolves once the HTTP banner is printed. */
async function startServe(lake, ...extra) {
  const [pg, web] = [await freePort(), await freePort()];
  const proc = spawn(nativeBin(), ['serve', '--lake', lake, '--pg-port', String(pg), '--http-port', String(web), ...extra], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  proc.stderr.on('data', (d) => { stderr += d; });
  const deadline = Date.now() + 60000;
  while (!/HTTP on http:/.test(stderr)) {
    if (proc.exitCode !== null || Date.now() > deadline) {
      proc.kill();
      throw new Error(`medallion serve did not start:\n${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    base: `http://127.0.0.1:${web}`,
    stderr: () => stderr,
    stop: () => new Promise((res) => {
      if (proc.exitCode !== null) return res();
      proc.once('exit', res);
      proc.kill('SIGTERM');
    }),
  };
}

/** A request exactly as given (fetch would normalise `..` away). */
function rawGet(base, rawPath, headers = {}) {
  return new Promise((res, rej) => {
    const u = new URL(base);
    const req = http.request({ host: u.hostname, port: u.port, path: rawPath, headers }, (r) => {
      const chunks = [];
      r.on('data', (c) => chunks.push(c));
      r.on('end', () => res({ status: r.statusCode, headers: r.headers, body: Buffer.concat(chunks) }));
    });
    req.on('error', rej);
    req.end();
  });
}

function filesBelow(dir) {
  const out = [];
  const walk = (d) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out.push(p);
    }
  };
  walk(dir);
  return out.sort();
}

let fx;
let server;

before(async () => {
  fx = demoFixture();
  server = await startServe(fx.lake);
});
after(async () => {
  await server?.stop();
});

test('/lake/ serves the lake\'s files with Range semantics', async () => {
  const parquet = filesBelow(path.join(fx.lake, 'gold/sales_by_region_day')).find((f) => f.endsWith('.parquet'));
  assert.ok(parquet, 'a Parquet file in gold/sales_by_region_day');
  const bytes = fs.readFileSync(parquet);
  const size = bytes.length;
  assert.ok(size > 200, `${parquet} has ${size} bytes`);
  const url = `${server.base}/lake/${path.relative(fx.lake, parquet).split(path.sep).map(encodeURIComponent).join('/')}`;

  const whole = await fetch(url);
  assert.equal(whole.status, 200);
  assert.deepEqual(Buffer.from(await whole.arrayBuffer()), bytes);
  assert.equal(whole.headers.get('accept-ranges'), 'bytes');
  assert.equal(whole.headers.get('content-length'), String(size));
  assert.equal(whole.headers.get('access-control-allow-origin'), '*');
  assert.match(whole.headers.get('access-control-expose-headers'), /Content-Range/);
  const etag = whole.headers.get('etag');
  assert.match(etag, /^"[^"]+"$/);

  const cases = [
    ['bytes=10-99', 10, 100],
    ['bytes=0-0', 0, 1],
    [`bytes=${size - 5}-${size + 1000}`, size - 5, size],
    ['bytes=100-', 100, size],
    ['bytes=-64', size - 64, size],
    [`bytes=-${size + 10}`, 0, size],
  ];
  for (const [range, from, to] of cases) {
    const r = await fetch(url, { headers: { Range: range } });
    assert.equal(r.status, 206, range);
    assert.equal(r.headers.get('content-range'), `bytes ${from}-${to - 1}/${size}`, range);
    assert.equal(r.headers.get('etag'), etag, range);
    assert.deepEqual(Buffer.from(await r.arrayBuffer()), bytes.subarray(from, to), range);
  }
  for (const range of [`bytes=${size}-`, `bytes=${size}-${size + 5}`, 'bytes=-0']) {
    const r = await fetch(url, { headers: { Range: range } });
    assert.equal(r.status, 416, range);
    assert.equal(r.headers.get('content-range'), `bytes */${size}`, range);
  }
  // Not a range this server answers (several, reversed, another unit): the whole file (RFC 9110).
  for (const range of ['bytes=0-1,5-6', 'bytes=9-2', 'items=0-1']) {
    const r = await fetch(url, { headers: { Range: range } });
    assert.equal(r.status, 200, range);
    assert.equal((await r.arrayBuffer()).byteLength, size, range);
  }

  const head = await fetch(url, { method: 'HEAD' });
  assert.equal(head.status, 200);
  assert.equal(head.headers.get('content-length'), String(size));
  assert.equal(head.headers.get('etag'), etag);
  assert.equal((await head.arrayBuffer()).byteLength, 0);

  const cached = await fetch(url, { headers: { 'If-None-Match': etag } });
  assert.equal(cached.status, 304);
  // If-Range with another version: the whole (new) file rather than a slice of it.
  const stale = await fetch(url, { headers: { Range: 'bytes=0-9', 'If-Range': '"other"' } });
  assert.equal(stale.status, 200);
  assert.equal((await stale.arrayBuffer()).byteLength, size);

  const log = await fetch(`${server.base}/lake/gold/sales_by_region_day/_delta_log/00000000000000000000.json`);
  assert.equal(log.status, 200);
  assert.equal(await log.text(), fs.readFileSync(path.join(fx.lake, 'gold/sales_by_region_day/_delta_log/00000000000000000000.json'), 'utf8'));

  const preflight = await fetch(url, { method: 'OPTIONS', headers: { Origin: 'http://example.com', 'Access-Control-Request-Headers': 'range' } });
  assert.equal(preflight.status, 204);
  assert.match(preflight.headers.get('access-control-allow-headers'), /Range/);
});

test('/lake/ refuses listings, escapes, hidden files and writes', async () => {
  for (const p of ['/lake/gold/no_such_table/_delta_log/00000000000000000000.json', '/lake/gold/sales_by_region_day', '/lake/gold/', '/lake/']) {
    const r = await rawGet(server.base, p);
    assert.equal(r.status, 404, p);
    assert.ok(JSON.parse(r.body).error, p);
  }
  const secret = path.relative(fx.lake, path.join(fx.dir, 'pipeline.toml')); // ../retail/pipeline.toml
  for (const p of [`/lake/${secret}`, '/lake/gold/../../retail/pipeline.toml', '/lake/%2e%2e/retail/pipeline.toml',
    '/lake/gold/%2E%2E/%2E%2E/retail/pipeline.toml', '/../Cargo.toml', '/%2e%2e/Cargo.toml', '/.git/config']) {
    const r = await rawGet(server.base, p);
    assert.equal(r.status, 400, `${p}: ${r.body}`);
    assert.match(JSON.parse(r.body).error, /refused/, p);
  }
  const put = await fetch(`${server.base}/lake/gold/x.json`, { method: 'PUT', body: '{}' });
  assert.equal(put.status, 405);
  assert.equal(fs.existsSync(path.join(fx.lake, 'gold/x.json')), false);

  // Without --run there is no report and no alert stream: JSON errors that say how to get them.
  for (const p of ['/api/report', '/api/alerts']) {
    const r = await fetch(`${server.base}${p}`);
    assert.equal(r.status, 404, p);
    assert.match((await r.json()).error, /--run PIPELINE.toml --watch/, p);
  }
});

test('the dashboard at / shows the native answers, reading /lake/ of the same server', async () => {
  const browser = await launchChromium();
  try {
    const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
    const problems = [];
    page.on('pageerror', (e) => problems.push(e.message));
    const probes = [];
    page.on('console', (m) => {
      if (m.type() !== 'error') return;
      const url = m.location()?.url ?? '';
      // The engine finds a table's versions by probing its log: a 404 there is an answer.
      if (/status of 404/.test(m.text()) && /\/lake\/gold\/[a-z_]+\/_delta_log\//.test(url)) probes.push(url);
      else problems.push(`${m.text()} ${url}`);
    });
    await page.goto(`${server.base}/`);
    await page.waitForSelector('body:not([data-state="loading"])', { timeout: 60000 });
    assert.equal(await page.getAttribute('body', 'data-state'), 'ready', await page.textContent('#error'));
    assert.equal(await page.textContent('#lake-url'), `${server.base}/lake`);

    const tables = ['sales_by_region_day', 'customer_segments', 'low_stock_alerts']
      .map((name) => [name, `${fx.lake}/gold/${name}`, 'delta']);
    const [want] = nativeRows({
      tables,
      sql: `SELECT round(sum(revenue), 2) AS revenue, sum(orders) AS orders, sum(units) AS units,
        (SELECT count(*) FROM customer_segments) AS customers, (SELECT count(*) FROM low_stock_alerts) AS alerts
        FROM sales_by_region_day`,
    });
    const kpis = await page.$$eval('[data-kpi]', (els) => Object.fromEntries(els.map((e) => [e.dataset.kpi, Number(e.dataset.value)])));
    assert.deepEqual(kpis, want);
    await page.screenshot({ path: path.join(SHOTS, 'serve-dashboard.png'), fullPage: true });
    assert.deepEqual(problems, []);
    console.log(`# log probes answered 404: ${probes.map((u) => u.replace(server.base, '')).join(', ')}`);
  } finally {
    await browser.close();
  }
});

const SPEC = `
[pipeline]
name = "serve_live"

[bronze.products_raw]
path = "products.csv"
schema = { product_id = "bigint", name = "string", reorder_level = "bigint" }

[bronze.inventory_raw]
path = "inventory/*.csv"
schema = { seq = "bigint", product_id = "bigint", warehouse = "string", qty = "bigint" }

[silver.inventory]
sql = "SELECT seq, product_id, warehouse, qty FROM inventory_raw"
dedupe = { key = ["product_id", "warehouse"], order_by = "seq" }

[gold.low_stock]
sql = """
SELECT i.product_id, i.warehouse, i.qty, p.reorder_level
FROM inventory i JOIN products_raw p USING (product_id)
WHERE i.qty < p.reorder_level
"""
alert = { key = ["product_id", "warehouse"] }
`;

/** Reads SSE `alert` events from a fetch response body as they come. */
function sseEvents(response) {
  const events = [];
  let buffer = '';
  const decoder = new TextDecoder();
  const done = (async () => {
    for await (const chunk of response.body) {
      buffer += decoder.decode(chunk, { stream: true });
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const fields = Object.fromEntries(block.split('\n').filter((l) => l && !l.startsWith(':')).map((l) => {
          const i = l.indexOf(':');
          return [l.slice(0, i), l.slice(i + 1).trimStart()];
        }));
        if (fields.event === 'alert') events.push({ id: Number(fields.id), alert: JSON.parse(fields.data) });
      }
    }
  })().catch(() => {});
  return { events, done };
}

async function until(what, check, ms = 15000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const got = await check();
    if (got) return got;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

test('serve --run --watch: a dropped file becomes an SSE alert and /api/report shows its batch', async () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'medallion-serve-live-'));
  const lake = path.join(root, 'lake');
  fs.writeFileSync(path.join(root, 'pipeline.toml'), SPEC);
  fs.writeFileSync(path.join(root, 'products.csv'), 'product_id,name,reorder_level\n1,tea,10\n2,milk,20\n');
  fs.mkdirSync(path.join(root, 'inventory'));
  fs.writeFileSync(path.join(root, 'inventory/0001.csv'), 'seq,product_id,warehouse,qty\n1,1,east,50\n2,2,east,50\n');
  const live = await startServe(lake, '--run', path.join(root, 'pipeline.toml'), '--watch', '--trigger-interval', '200ms');
  const controller = new AbortController();
  try {
    const first = await until('the first run\'s report', async () => {
      const r = await fetch(`${live.base}/api/report`);
      return r.status === 200 && r.json();
    }, 60000);
    assert.equal(first.report.pipeline, 'serve_live');

    const stream = await fetch(`${live.base}/api/alerts`, { signal: controller.signal });
    assert.equal(stream.status, 200);
    assert.equal(stream.headers.get('content-type'), 'text/event-stream');
    const { events } = sseEvents(stream);

    // Written elsewhere, renamed in: the watcher reads a file once, under its name.
    const tmp = path.join(root, 'drop.csv');
    fs.writeFileSync(tmp, 'seq,product_id,warehouse,qty\n3,2,east,4\n');
    const dropped = Date.now();
    fs.renameSync(tmp, path.join(root, 'inventory/0002.csv'));

    const event = await until('an SSE alert', () => events.find((e) => e.alert.table === 'low_stock'), 20000);
    const latency = Date.now() - dropped;
    assert.deepEqual(event.alert.key, { product_id: 2, warehouse: 'east' });
    assert.equal(event.alert.row.qty, 4);
    assert.ok(event.id >= 1);

    const report = await until('the batch in /api/report', async () => {
      const r = await (await fetch(`${live.base}/api/report`)).json();
      return r.batch && r.batch.files >= 1 && r;
    });
    assert.equal(report.batch.ingested.inventory_raw, 1);
    assert.ok(report.report.tables.some((t) => t.table === 'low_stock' && t.version !== null));

    // A client that reconnects with Last-Event-ID gets what it missed.
    const again = await fetch(`${live.base}/api/alerts`, { signal: controller.signal, headers: { 'Last-Event-ID': String(event.id - 1) } });
    const replay = sseEvents(again);
    const replayed = await until('the replayed alert', () => replay.events.find((e) => e.id === event.id), 5000);
    assert.deepEqual(replayed.alert, event.alert);
    console.log(`# alert over SSE ${latency} ms after the file was renamed in`);
  } finally {
    controller.abort();
    await live.stop();
    fs.rmSync(root, { recursive: true, force: true });
  }
});
