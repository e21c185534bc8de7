// The dashboard (web/) in real headless Chromium over the retail demo's lake, served by the
// Range server: every KPI, region bar, segment and alert row it shows must be the native CLI's
// answer over the same gold tables, the region filter must re-query, and a wrong lake URL must
// give an error that names it. Leaves screenshots in ~/.cache/medallion/ for a human look.
import assert from 'node:assert/strict';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { demoFixture, launchChromium, nativeRows, startServer } from './support.mjs';

const SHOTS = path.join(os.homedir(), '.cache/medallion');

let server;
let fx;
let browser;
let page;
const pageErrors = [];

before(async () => {
  fx = demoFixture();
  server = await startServer();
  browser = await launchChromium();
  page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  page.on('pageerror', (e) => pageErrors.push(e.message));
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

/** The native CLI's rows for `sql` over the demo lake's gold tables. */
function native(sql) {
  const tables = ['sales_by_region_day', 'customer_segments', 'low_stock_alerts']
    .map((name) => [name, `${fx.lake}/gold/${name}`, 'delta']);
  return nativeRows({ sql, tables });
}

async function open(lake) {
  await server.stats(true);
  await page.goto(`${server.base}/web/?lake=${encodeURIComponent(lake)}`);
  await page.waitForSelector('body:not([data-state="loading"])', { timeout: 20000 });
  return page.getAttribute('body', 'data-state');
}

/**
 * Checks the footer against what the server saw since its counters were last reset. The engine
 * counts its own reads, so it may see fewer requests than the server (HEAD probes of the Delta
 * log, a read split into two fetches); `exactBytes` asks for the bytes to match exactly;
 * `fromCache`, that every read of a data file was answered by the engine's range cache: the
 * lake's data files are Delta data files, never rewritten, so none is even confirmed.
 */
async function checkFooter({ exactBytes, fromCache = false }) {
  const io = await page.$eval('#io', (e) => ({ ...e.dataset, text: e.textContent }));
  const lake = (await server.stats()).log.filter(([, url]) => url.startsWith('/tests/js/.work/lake/'));
  // Bytes of the lake's files: a 404 (the optional _delta_log/_last_checkpoint probe) carries an
  // error page, not lake data, and the engine rightly counts none of it.
  const bytes = lake.filter(([, , , status]) => status < 400).reduce((sum, [, , , , body]) => sum + body, 0);
  const context = `${io.text}; server: ${lake.length} requests, ${bytes} bytes`;
  if (fromCache) {
    assert.ok(Number(io.cacheHits) > 0 && Number(io.bytesFromCache) > 0, context);
    assert.ok(lake.every(([, url]) => url.includes('/_delta_log/')), context);
    assert.equal(Number(io.bytes), 0, context);
    assert.match(io.text, /came from memory/);
  } else {
    assert.ok(Number(io.bytes) > 0 && Number(io.requests) > 0, context);
  }
  if (exactBytes) assert.equal(Number(io.bytes), bytes, context);
  else assert.ok(Number(io.bytes) <= bytes, context);
  assert.ok(Number(io.requests) <= lake.length, context);
  assert.match(io.text, /HTTP requests/);
}

const kpis = () => page.$$eval('[data-kpi]', (els) => Object.fromEntries(els.map((e) => [e.dataset.kpi, Number(e.dataset.value)])));

test('the dashboard shows the native answers over the demo lake', async () => {
  // Relative to the page, as a user would write it.
  const state = await open('../tests/js/.work/lake');
  assert.equal(state, 'ready', await page.textContent('#error'));

  const [totals] = native(`SELECT round(sum(revenue), 2) AS revenue, sum(orders) AS orders, sum(units) AS units,
    (SELECT count(*) FROM customer_segments) AS customers, (SELECT count(*) FROM low_stock_alerts) AS alerts
    FROM sales_by_region_day`);
  assert.deepEqual(await kpis(), totals);

  const regions = native('SELECT region, round(sum(revenue), 2) AS revenue FROM sales_by_region_day GROUP BY region ORDER BY region');
  assert.ok(regions.length >= 2);
  const bars = await page.$$eval('#region-chart rect[data-region]', (els) => els.map((e) => ({ region: e.dataset.region, revenue: Number(e.dataset.value) })));
  assert.deepEqual(bars.sort((a, b) => a.region.localeCompare(b.region)), regions);

  const days = native('SELECT count(DISTINCT day) AS n FROM sales_by_region_day')[0].n;
  assert.equal(await page.locator('#day-chart circle[data-day]').count(), days);

  const segments = native('SELECT segment, count(*) AS customers FROM customer_segments GROUP BY segment ORDER BY segment');
  const shownSegments = await page.$$eval('#segments tbody tr', (trs) => trs.map((tr) => ({ segment: tr.dataset.segment, customers: Number(tr.dataset.customers) })));
  assert.deepEqual(shownSegments.sort((a, b) => a.segment.localeCompare(b.segment)), segments);

  const shortfalls = await page.$$eval('#alerts tbody tr', (trs) => trs.map((tr) => Number(tr.dataset.shortfall)));
  assert.equal(shortfalls.length, totals.alerts);
  assert.deepEqual(shortfalls, native('SELECT shortfall FROM low_stock_alerts ORDER BY shortfall DESC').map((r) => r.shortfall));

  await checkFooter({ exactBytes: true });

  await page.screenshot({ path: path.join(SHOTS, 'web-dashboard.png'), fullPage: true });
  assert.deepEqual(pageErrors, []);
});

test('the region filter re-queries the engine', async () => {
  const region = 'East';
  await server.stats(true);
  await page.selectOption('#region', region);
  await page.waitForSelector('body[data-state="ready"] #region:not([disabled])', { timeout: 10000 });
  const [want] = native(`SELECT round(sum(revenue), 2) AS revenue, sum(orders) AS orders, sum(units) AS units,
    (SELECT count(*) FROM customer_segments WHERE region = '${region}') AS customers,
    (SELECT count(*) FROM low_stock_alerts) AS alerts
    FROM sales_by_region_day WHERE region = '${region}'`);
  assert.deepEqual(await kpis(), want);
  assert.equal(await page.locator(`#region-chart .bar.selected rect[data-region="${region}"]`).count(), 1);
  assert.match(await page.textContent('#io'), new RegExp(`Filtered to ${region}`));
  // The filter re-runs the queries over files the engine has already read: its range cache
  // answers them with no request (tests/js/cache.test.mjs), and the footer says so.
  await checkFooter({ exactBytes: true, fromCache: true });

  await page.setViewportSize({ width: 380, height: 800 });
  await page.screenshot({ path: path.join(SHOTS, 'web-dashboard-narrow.png'), fullPage: true });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  assert.ok(overflow <= 0, `the page scrolls sideways by ${overflow}px at 380px`);
  await page.setViewportSize({ width: 1200, height: 900 });
  assert.deepEqual(pageErrors, []);
});

test('a wrong lake URL shows an error that names it', async () => {
  const lake = `${server.base}/tests/js/.work/no-such-lake`;
  const state = await open(lake);
  assert.equal(state, 'error');
  const message = await page.textContent('#error');
  assert.ok(message.includes(`${lake}/gold/sales_by_region_day`), message);
  assert.equal(await page.isVisible('#dashboard'), false);
  await page.screenshot({ path: path.join(SHOTS, 'web-dashboard-error.png') });
  assert.deepEqual(pageErrors, []);
});
