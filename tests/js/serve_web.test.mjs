// The HTTP side of `medallion serve`: the lake's files with Range semantics checked against the
// bytes on disk, the dashboard served at `/` showing the native CLI's numbers in headless
// Chromium (the npm package reading the lake from the same server), and a watched pipeline's
// alerts as Server-Sent Events and its last batch at /api/report.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
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

// ── The dashboard's filters, history, pipeline health and live alerts ────────────────────────

/** Chromium with a page that records errors; 404s of Delta log probes are answers, as above. */
async function dashboardPage(browser, viewport = { width: 1280, height: 900 }) {
  const page = await browser.newPage({ viewport });
  const problems = [];
  page.on('pageerror', (e) => problems.push(e.message));
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    const url = m.location()?.url ?? '';
    if (/status of 404/.test(m.text()) && /\/lake\/gold\/[a-z_]+\/_delta_log\//.test(url)) return;
    problems.push(`${m.text()} ${url}`);
  });
  return { page, problems };
}

const GOLD = ['sales_by_region_day', 'customer_segments', 'low_stock_alerts'];

/** What each panel shows, from the data-* attributes the page puts on its numbers. */
async function shownPanels(page) {
  return page.evaluate(() => {
    const all = (sel, f) => [...document.querySelectorAll(sel)].map(f);
    return {
      kpis: Object.fromEntries(all('[data-kpi]', (e) => [e.dataset.kpi, Number(e.dataset.value)])),
      regions: all('#region-chart rect[data-region]', (e) => ({ region: e.dataset.region, revenue: Number(e.dataset.value) })),
      days: all('#day-chart circle[data-day]', (e) => ({ day: e.dataset.day, revenue: Number(e.dataset.value) })),
      segments: all('#segments tbody tr[data-segment]', (e) => ({ segment: e.dataset.segment, customers: Number(e.dataset.customers), monetary: Number(e.dataset.monetary) })),
      alerts: all('#alerts tbody tr', (e) => ({ product_id: Number(e.dataset.product), warehouse: e.dataset.warehouse, shortfall: Number(e.dataset.shortfall) })),
      ignores: Object.fromEntries(all('.applies', (e) => [e.dataset.panel ?? e.closest('[data-panel]').dataset.panel, e.dataset.ignores ?? ''])),
    };
  });
}

/**
 * The native CLI's answers for the same panels: `f` as the page's filters (dates as
 * [from, to] or null), `versions` per gold table (or none: the latest).
 */
function nativePanels(lake, f, versions = {}) {
  const tables = GOLD.map((t) => [t, `${lake}/gold/${t}${versions[t] === undefined ? '' : `@${versions[t]}`}`, 'delta']);
  const q = (sql) => nativeRows({ tables, sql });
  const and = (...terms) => (terms.filter(Boolean).length ? `WHERE ${terms.filter(Boolean).join(' AND ')}` : '');
  const dates = f.dates ? `day BETWEEN DATE '${f.dates[0]}' AND DATE '${f.dates[1]}'` : '';
  const region = f.region ? `region = '${f.region}'` : '';
  const category = f.category ? `category = '${f.category}'` : '';
  const [totals] = q(`SELECT round(sum(revenue), 2) AS revenue, sum(orders) AS orders, sum(units) AS units,
    (SELECT count(*) FROM customer_segments ${and(region)}) AS customers,
    (SELECT count(*) FROM low_stock_alerts ${and(category)}) AS alerts
    FROM sales_by_region_day ${and(dates, region)}`);
  return {
    kpis: totals,
    regions: q(`SELECT region, round(sum(revenue), 2) AS revenue FROM sales_by_region_day ${and(dates)} GROUP BY region ORDER BY region`),
    days: q(`SELECT CAST(day AS VARCHAR) AS day, round(sum(revenue), 2) AS revenue FROM sales_by_region_day ${and(dates, region)} GROUP BY day ORDER BY day`),
    segments: q(`SELECT segment, count(*) AS customers, round(sum(monetary), 2) AS monetary FROM customer_segments ${and(region)} GROUP BY segment ORDER BY segment`),
    alerts: q(`SELECT product_id, warehouse, shortfall FROM low_stock_alerts ${and(category)} ORDER BY shortfall DESC, product_id, warehouse`),
  };
}

async function checkPanels(page, lake, f, versions, what) {
  const shown = await shownPanels(page);
  const want = nativePanels(lake, f, versions);
  const byKey = (k) => (a, b) => String(a[k]).localeCompare(String(b[k]));
  assert.deepEqual(shown.kpis, want.kpis, `${what}: KPIs`);
  assert.deepEqual(shown.regions.sort(byKey('region')), want.regions, `${what}: revenue by region`);
  assert.deepEqual(shown.days, want.days, `${what}: revenue by day`);
  assert.deepEqual(shown.segments.sort(byKey('segment')), want.segments, `${what}: segments`);
  assert.deepEqual(shown.alerts, want.alerts, `${what}: low-stock alerts`);
  return shown;
}

/** Sets the filter controls, one change at a time as a user would, and waits for the panels. */
async function filter(page, values) {
  for (const [id, value] of Object.entries(values)) {
    await page.selectOption(`#${id}`, value);
    await page.waitForSelector(`body[data-state="ready"] #${id}:not([disabled])`, { timeout: 30000 });
  }
  assert.equal(await page.isVisible('#error'), false, await page.textContent('#error'));
}

test('dashboard: every panel, filter and version of the gold tables equals native SQL (served)', async () => {
  // A lake with two versions of every gold table: the demo, then one more day.
  const root = path.join(path.dirname(fx.lake), 'dashboard-history');
  fs.rmSync(root, { recursive: true, force: true });
  const demo = (...more) => execFileSync(nativeBin(),
    ['demo', '--dir', `${root}/retail`, '--lake', `${root}/lake`, '--scale', '0.2', '--engine', 'native', ...more], { stdio: 'pipe' });
  demo();
  demo('--more');
  const lake = `${root}/lake`;
  const served = await startServe(lake);
  const browser = await launchChromium();
  try {
    const { page, problems } = await dashboardPage(browser);
    await page.goto(`${served.base}/`);
    await page.waitForSelector('body:not([data-state="loading"])', { timeout: 60000 });
    assert.equal(await page.getAttribute('body', 'data-state'), 'ready', await page.textContent('#error'));
    // Opened without ?live on a server without a pipeline: health says so and asks nothing.
    assert.equal(await page.getAttribute('#health', 'data-live'), 'off');
    assert.match(await page.textContent('#health-status'), /Not available\..*medallion serve --run PIPELINE\.toml --watch/);

    const first = await checkPanels(page, lake, {}, {}, 'no filter');
    assert.deepEqual(Object.values(first.ignores).filter(Boolean), [], 'no filter, no note');
    const days = first.days.map((d) => d.day);
    assert.ok(days.length >= 4, `days ${days}`);
    const [{ category }] = nativeRows({ tables: [['a', `${lake}/gold/low_stock_alerts`, 'delta']], sql: 'SELECT category, count(*) AS n FROM a GROUP BY category ORDER BY n DESC, category LIMIT 1' });

    await filter(page, { region: 'East' });
    let shown = await checkPanels(page, lake, { region: 'East' }, {}, 'region East');
    assert.equal(await page.locator('#region-chart .bar.selected rect[data-region="East"]').count(), 1);
    assert.equal(shown.ignores.alerts, 'region');
    assert.equal(shown.ignores.kpis, 'region');

    await filter(page, { from: days[1], to: days[2] });
    shown = await checkPanels(page, lake, { region: 'East', dates: [days[1], days[2]] }, {}, 'East, two days');
    assert.equal(shown.ignores.segments, 'dates');
    assert.equal(shown.ignores.alerts, 'dates region');
    assert.equal(shown.ignores.day, '');

    await filter(page, { category });
    shown = await checkPanels(page, lake, { region: 'East', dates: [days[1], days[2]], category }, {}, `East, two days, ${category}`);
    assert.ok(shown.alerts.length >= 1, `alerts in ${category}`);
    assert.equal(shown.ignores.day, 'category');
    assert.equal(shown.ignores.segments, 'category dates');
    assert.equal(shown.ignores.alerts, 'dates region');
    await page.screenshot({ path: path.join(SHOTS, 'dashboard-filtered.png'), fullPage: true });

    await page.click('#reset');
    await page.waitForSelector('body[data-state="ready"] #reset:not([disabled])', { timeout: 30000 });
    await checkPanels(page, lake, {}, {}, 'filters cleared');

    // History: two points in time; the older one is version 0 of every gold table.
    await page.click('#history summary');
    await page.waitForSelector('#as-of:not([disabled]) option:nth-child(2)', { state: 'attached', timeout: 30000 });
    const options = await page.$$eval('#as-of option', (os) => os.map((o) => o.value));
    assert.deepEqual(options, ['', '1']);
    assert.equal(await page.locator('#versions tbody tr').count(), GOLD.length * 2);
    await filter(page, { 'as-of': '1' });
    const v0 = Object.fromEntries(GOLD.map((t) => [t, 0]));
    assert.deepEqual(JSON.parse(await page.getAttribute('body', 'data-versions')), v0);
    assert.match(await page.textContent('#as-of-badge'), /^as of /);
    const old = await checkPanels(page, lake, {}, v0, 'version 0');
    assert.ok(old.days.length < days.length, 'version 0 has fewer days');
    await filter(page, { region: 'West', category });
    await checkPanels(page, lake, { region: 'West', category }, v0, `version 0, West, ${category}`);
    await filter(page, { 'as-of': '' });
    await checkPanels(page, lake, { region: 'West', category }, {}, `latest, West, ${category}`);
    await filter(page, { region: '', category: '' });
    await page.screenshot({ path: path.join(SHOTS, 'dashboard-desktop.png'), fullPage: true });

    // A phone: nothing scrolls sideways, the numbers stay the same.
    await page.setViewportSize({ width: 375, height: 812 });
    await page.waitForFunction(() => document.querySelector('#day-chart svg').viewBox.baseVal.width < 375);
    await page.screenshot({ path: path.join(SHOTS, 'dashboard-phone.png'), fullPage: true });
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    assert.ok(overflow <= 0, `the page scrolls sideways by ${overflow}px at 375px`);
    assert.deepEqual(problems, []);
  } finally {
    await browser.close();
    await served.stop();
  }
});

const HEALTH_SPEC = SPEC.replace('[silver.inventory]\n', '[silver.inventory]\nexpect = [{ name = "counted", condition = "qty >= 0", on_violation = "drop" }]\n');

test('dashboard ?live: pipeline health equals /api/report, a committed alert shows within a second', async () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'medallion-dashboard-live-'));
  const lake = path.join(root, 'lake');
  // The demo's gold tables for the panels, and a watched pipeline beside them in the same lake.
  fs.mkdirSync(path.join(lake, 'gold'), { recursive: true });
  for (const t of GOLD) fs.cpSync(path.join(fx.lake, 'gold', t), path.join(lake, 'gold', t), { recursive: true });
  fs.writeFileSync(path.join(root, 'pipeline.toml'), HEALTH_SPEC);
  assert.notEqual(HEALTH_SPEC, SPEC);
  fs.writeFileSync(path.join(root, 'products.csv'), 'product_id,name,reorder_level\n1,tea,10\n2,milk,20\n');
  fs.mkdirSync(path.join(root, 'inventory'));
  fs.writeFileSync(path.join(root, 'inventory/0001.csv'), 'seq,product_id,warehouse,qty\n1,1,east,50\n2,2,east,50\n3,1,west,-1\n');
  const live = await startServe(lake, '--run', path.join(root, 'pipeline.toml'), '--watch', '--trigger-interval', '200ms');
  const browser = await launchChromium();
  try {
    // After the first run: before it the server answers 503, which a browser logs as an error.
    await until('the first run\'s report', async () => (await fetch(`${live.base}/api/report`)).status === 200, 60000);
    const { page, problems } = await dashboardPage(browser);
    await page.goto(`${live.base}/?live`);
    await page.waitForSelector('body:not([data-state="loading"])', { timeout: 60000 });
    assert.equal(await page.getAttribute('body', 'data-state'), 'ready', await page.textContent('#error'));
    await page.waitForSelector('#health[data-live="on"]', { timeout: 10000 });
    await page.waitForFunction(() => /Connected/.test(document.getElementById('live-status').textContent), null, { timeout: 10000 });

    const checkHealth = async () => {
      const { report } = await (await fetch(`${live.base}/api/report`)).json();
      await page.waitForFunction((id) => document.getElementById('health').dataset.runId === id, report.run_id, { timeout: 10000 });
      const rows = await page.$$eval('#health-table tbody tr', (trs) => trs.map((tr) => ({ ...tr.dataset })));
      const want = report.tables.map((t) => {
        const committed = t.version === null ? '' : String(JSON.parse(fs.readFileSync(
          path.join(lake, t.layer, t.table, '_delta_log', `${String(t.version).padStart(20, '0')}.json`), 'utf8').split('\n')[0]).commitInfo.timestamp);
        return {
          table: t.table, version: t.version === null ? '' : String(t.version), rows: String(t.rows_out),
          dropped: String(t.dropped), quarantined: String(t.quarantined), committed,
          failing: t.expectations.filter((e) => e.violations > 0).map((e) => e.name).join(' '),
        };
      });
      assert.deepEqual(rows, want);
      return report;
    };
    const report = await checkHealth();
    const inventory = report.tables.find((t) => t.table === 'inventory');
    assert.equal(inventory.dropped, 1);
    assert.equal(await page.getAttribute('#health-table tr[data-table="inventory"]', 'data-failing'), 'counted');

    // Two drops, two alerts: the newest is listed first, each within a second of its commit.
    for (const [n, qty] of [[2, 4], [3, 7]]) {
      const tmp = path.join(root, 'drop.csv');
      fs.writeFileSync(tmp, `seq,product_id,warehouse,qty\n${n + 2},${n - 1},north,${qty}\n`);
      fs.renameSync(tmp, path.join(root, `inventory/000${n}.csv`));
      const li = await page.waitForSelector(`#live-alerts li[data-key='{"product_id":${n - 1},"warehouse":"north"}']`, { timeout: 20000 });
      const { shown, at } = await li.evaluate((e) => ({ shown: Number(e.dataset.shown), at: e.querySelector('time').getAttribute('datetime') }));
      const latency = shown - Date.parse(at);
      assert.ok(latency >= 0 && latency <= 1000, `alert shown ${latency} ms after its commit at ${at}`);
      console.log(`# alert ${n - 1}: shown ${latency} ms after its commit`);
    }
    const keys = await page.$$eval('#live-alerts li', (lis) => lis.map((li) => JSON.parse(li.dataset.key)));
    assert.deepEqual(keys, [{ product_id: 2, warehouse: 'north' }, { product_id: 1, warehouse: 'north' }]);
    await until('the batch in the health panel', async () => {
      const r = await (await fetch(`${live.base}/api/report`)).json();
      return r.batch && r.batch.files >= 1;
    });
    await checkHealth();
    await page.screenshot({ path: path.join(SHOTS, 'dashboard-live.png'), fullPage: true });
    assert.deepEqual(problems, []);
  } finally {
    await browser.close();
    await live.stop();
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test('dashboard ?live: a commit of the gold tables by the watched pipeline redraws the panels', async () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'medallion-dashboard-refresh-'));
  fs.cpSync(fx.dir, path.join(root, 'retail'), { recursive: true });
  fs.cpSync(fx.lake, path.join(root, 'lake'), { recursive: true });
  const lake = path.join(root, 'lake');
  const served = await startServe(lake, '--run', path.join(root, 'retail/pipeline.toml'), '--watch', '--trigger-interval', '200ms');
  const browser = await launchChromium();
  try {
    await until('the first run\'s report', async () => (await fetch(`${served.base}/api/report`)).status === 200, 60000);
    const { page, problems } = await dashboardPage(browser);
    await page.goto(`${served.base}/?live`);
    await page.waitForSelector('body[data-state="ready"]', { timeout: 60000 });
    await page.waitForSelector('#health[data-live="on"]', { timeout: 10000 });
    const before = await checkPanels(page, lake, {}, {}, 'before the commit');

    // One more line of order 1: three more units in its region and day.
    const tmp = path.join(root, 'items.ndjson');
    fs.writeFileSync(tmp, '{"order_id":1,"line_no":9,"product_id":1,"quantity":3,"unit_price":39.99}\n');
    fs.renameSync(tmp, path.join(root, 'retail/data/order_items/order_items-0099.ndjson'));
    await page.waitForFunction(() => document.getElementById('new-data').dataset.versions, null, { timeout: 30000 });
    await page.waitForFunction(() => document.getElementById('io').textContent.startsWith('New versions'), null, { timeout: 30000 });
    const committed = JSON.parse(await page.getAttribute('#new-data', 'data-versions'));
    const { report } = await (await fetch(`${served.base}/api/report`)).json();
    assert.deepEqual(committed, Object.fromEntries(report.tables
      .filter((t) => GOLD.includes(t.table) && t.version !== null).map((t) => [t.table, t.version])));
    assert.ok(committed.sales_by_region_day >= 1, JSON.stringify(committed));
    const after = await checkPanels(page, lake, {}, {}, 'after the commit');
    assert.equal(after.kpis.units, before.kpis.units + 3);
    assert.deepEqual(problems, []);
  } finally {
    await browser.close();
    await served.stop();
    fs.rmSync(root, { recursive: true, force: true });
  }
});
