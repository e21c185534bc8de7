// The retail dashboard: KPIs, charts, segments and low-stock alerts from the retail demo's gold
// tables, read straight from a lake served over HTTP. The Medallion engine (the npm package,
// WebAssembly) runs the SQL in the page and fetches only the byte ranges each query needs; the
// footer says how many requests and bytes that took. No server code: the lake's URL comes from
// `?lake=<url>` (default `./lake`, next to this page).
//
// The page's state is on <body data-state="loading|ready|error">; each KPI tile carries its
// exact number in `data-value` (tests read them).

const TABLES = ['sales_by_region_day', 'customer_segments', 'low_stock_alerts'];

// Sections that do not depend on the region filter (alerts are per warehouse, not region).
const BY_REGION = `SELECT region, round(sum(revenue), 2) AS revenue
  FROM sales_by_region_day GROUP BY region ORDER BY revenue DESC, region`;
const ALERTS = `SELECT snapshot_date, warehouse, product_id, name, category, on_hand, reorder_level, shortfall
  FROM low_stock_alerts ORDER BY shortfall DESC, product_id, warehouse`;

/** The queries the region filter re-runs; `region` '' means all regions. */
function filteredQueries(region) {
  const where = region ? `WHERE region = ${sqlString(region)}` : '';
  return {
    // Each order has one region and one day, so summing the per-(region, day) distinct order
    // counts gives the distinct orders.
    totals: `SELECT round(sum(revenue), 2) AS revenue, sum(orders) AS orders, sum(units) AS units
      FROM sales_by_region_day ${where}`,
    customers: `SELECT count(*) AS customers FROM customer_segments ${where}`,
    byDay: `SELECT day, round(sum(revenue), 2) AS revenue
      FROM sales_by_region_day ${where} GROUP BY day ORDER BY day`,
    segments: `SELECT segment, count(*) AS customers, round(sum(monetary), 2) AS monetary,
      round(avg(monetary), 2) AS per_customer
      FROM customer_segments ${where} GROUP BY segment ORDER BY monetary DESC, segment`,
  };
}

const $ = (id) => document.getElementById(id);
const integer = new Intl.NumberFormat('en-US');
const money = new Intl.NumberFormat('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const compact = new Intl.NumberFormat('en-US', { notation: 'compact', maximumFractionDigits: 1 });

const sqlString = (s) => `'${String(s).replaceAll("'", "''")}'`;
const fmt = (format, v) => (v === null || v === undefined ? '–' : format.format(v));

function kib(bytes) {
  return bytes < 1024 ? `${bytes} B` : bytes < 1 << 20 ? `${(bytes / 1024).toFixed(1)} KiB` : `${(bytes / (1 << 20)).toFixed(2)} MiB`;
}

function dayLabel(day) {
  const d = new Date(`${day}T00:00:00Z`);
  return Number.isNaN(d.getTime()) ? String(day) : d.toLocaleDateString('en-US', { month: 'short', day: 'numeric', timeZone: 'UTC' });
}

/** The lake's URL as a folder URL (trailing slash), resolved against the page. */
function lakeUrl() {
  const given = new URLSearchParams(location.search).get('lake') || './lake';
  return new URL(given.replace(/\/*$/, '/'), location.href);
}

// ── DOM helpers ─────────────────────────────────────────────────────────────────────────────

function build(make, tag, attrs = {}, children = []) {
  const node = make(tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) node.setAttribute(k, v);
  node.append(...children);
  return node;
}
const el = (tag, attrs, ...children) => build((t) => document.createElement(t), tag, attrs, children);
const svg = (tag, attrs, ...children) =>
  build((t) => document.createElementNS('http://www.w3.org/2000/svg', t), tag, attrs, children);

function setState(state, status = '') {
  document.body.dataset.state = state;
  $('dashboard').setAttribute('aria-busy', String(state === 'loading'));
  $('status').textContent = status;
}

// ── Sections ────────────────────────────────────────────────────────────────────────────────

function drawKpis({ revenue, orders, units, customers, alerts }) {
  const tiles = [
    ['revenue', 'Revenue', revenue, money],
    ['orders', 'Orders', orders, integer],
    ['units', 'Units sold', units, integer],
    ['customers', 'Customers with orders', customers, integer],
    ['alerts', 'Low-stock alerts', alerts, integer],
  ];
  $('kpis').replaceChildren(...tiles.map(([key, label, value, format]) =>
    el('div', { class: 'kpi', 'data-kpi': key, 'data-value': value ?? '' },
      el('dt', {}, label), el('dd', {}, fmt(format, value)))));
}

/** Horizontal bars, one per region, longest first; the selected region is highlighted. */
function drawRegionChart(rows, selected) {
  const width = 420, rowHeight = 34, left = 70, right = 56;
  const height = rows.length * rowHeight + 8;
  const max = Math.max(0, ...rows.map((r) => r.revenue)) || 1;
  const chart = svg('svg', {
    viewBox: `0 0 ${width} ${height}`, class: selected ? 'chart filtered' : 'chart', role: 'img',
    'aria-label': `Revenue by region: ${rows.map((r) => `${r.region} ${money.format(r.revenue)}`).join(', ')}`,
  });
  rows.forEach((r, i) => {
    const y = 4 + i * rowHeight, mid = y + rowHeight / 2;
    const w = ((width - left - right) * r.revenue) / max;
    chart.append(svg('g', { class: r.region === selected ? 'bar selected' : 'bar' },
      svg('text', { x: left - 8, y: mid, 'text-anchor': 'end', 'dominant-baseline': 'middle' }, r.region),
      svg('rect', { x: left, y: y + 5, width: w.toFixed(1), height: rowHeight - 10, rx: 3, 'data-region': r.region, 'data-value': r.revenue },
        svg('title', {}, `${r.region}: ${money.format(r.revenue)}`)),
      svg('text', { x: (left + w + 6).toFixed(1), y: mid, class: 'value', 'dominant-baseline': 'middle' }, compact.format(r.revenue))));
  });
  $('region-chart').replaceChildren(chart);
}

/** The smallest of 1, 2, 2.5, 5 × 10^k that is at least v: the top of a readable axis. */
function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 2.5, 5, 10].find((f) => f * p >= v) * p;
}

/** A line with a point per day over a zero-based axis with four gridlines. */
function drawDayChart(rows, region) {
  const width = 420, height = 220, m = { top: 12, right: 22, bottom: 28, left: 46 };
  const plotW = width - m.left - m.right, plotH = height - m.top - m.bottom;
  const max = niceMax(Math.max(0, ...rows.map((r) => r.revenue)));
  const x = (i) => m.left + (rows.length > 1 ? (i * plotW) / (rows.length - 1) : plotW / 2);
  const y = (v) => m.top + plotH - (v / max) * plotH;
  const what = region ? `Revenue by day in ${region}` : 'Revenue by day';
  const chart = svg('svg', {
    viewBox: `0 0 ${width} ${height}`, class: 'chart', role: 'img',
    'aria-label': rows.length
      ? `${what}, ${dayLabel(rows[0].day)} to ${dayLabel(rows.at(-1).day)}: ${rows.map((r) => `${dayLabel(r.day)} ${money.format(r.revenue)}`).join(', ')}`
      : `${what}: no sales`,
  });
  for (let t = 0; t <= 4; t++) {
    const v = (max * t) / 4;
    chart.append(
      svg('line', { x1: m.left, x2: width - m.right, y1: y(v), y2: y(v), class: 'grid' }),
      svg('text', { x: m.left - 6, y: y(v), 'text-anchor': 'end', 'dominant-baseline': 'middle', class: 'axis' }, compact.format(v)));
  }
  const every = Math.ceil(rows.length / 7);
  rows.forEach((r, i) => {
    if (i % every === 0 || i === rows.length - 1) {
      chart.append(svg('text', { x: x(i), y: height - 8, 'text-anchor': 'middle', class: 'axis' }, dayLabel(r.day)));
    }
  });
  chart.append(svg('polyline', { class: 'line', points: rows.map((r, i) => `${x(i).toFixed(1)},${y(r.revenue).toFixed(1)}`).join(' ') }));
  rows.forEach((r, i) => chart.append(svg('circle', { cx: x(i).toFixed(1), cy: y(r.revenue).toFixed(1), r: 4, class: 'point', 'data-day': r.day },
    svg('title', {}, `${dayLabel(r.day)}: ${money.format(r.revenue)}`))));
  $('day-chart').replaceChildren(chart);
}

function drawSegments(rows) {
  $('segments').tBodies[0].replaceChildren(...rows.map((r) =>
    el('tr', { 'data-segment': r.segment, 'data-customers': r.customers },
      el('th', { scope: 'row' }, r.segment.replace('_', ' ')),
      el('td', { class: 'num' }, integer.format(r.customers)),
      el('td', { class: 'num' }, money.format(r.monetary)),
      el('td', { class: 'num' }, money.format(r.per_customer)))));
}

function drawAlerts(rows) {
  const table = $('alerts');
  const dates = [...new Set(rows.map((r) => r.snapshot_date))];
  $('alerts-summary').textContent = rows.length
    ? `${rows.length} stock positions below their reorder level in the snapshot of ${dates.map(dayLabel).join(', ')}, largest shortfall first`
    : 'No product is below its reorder level.';
  table.tBodies[0].replaceChildren(...rows.map((r) =>
    el('tr', { 'data-shortfall': r.shortfall },
      el('th', { scope: 'row' }, `${r.name} `, el('span', { class: 'id' }, `#${r.product_id}`)),
      el('td', {}, r.category),
      el('td', {}, r.warehouse),
      el('td', { class: 'num' }, integer.format(r.on_hand)),
      el('td', { class: 'num' }, integer.format(r.reorder_level)),
      el('td', { class: 'num shortfall' }, integer.format(r.shortfall)))));
}

/** Footer: what the engine fetched for the last load or filter. */
function drawIo(what, stats, ms) {
  const io = $('io');
  io.dataset.requests = stats.requests;
  io.dataset.bytes = stats.bytes;
  io.dataset.ms = Math.round(ms);
  io.textContent = `${what}: the engine fetched ${kib(stats.bytes)} of the lake in ` +
    `${integer.format(stats.requests)} HTTP requests (byte ranges), ${integer.format(Math.round(ms))} ms.`;
}

function showError(error) {
  setState('error');
  $('error').hidden = false;
  $('error').replaceChildren(
    el('h2', {}, 'The dashboard could not load'),
    el('p', { class: 'message' }, error.message ?? String(error)),
    el('p', {}, 'Check that the lake is served over HTTP at that address, or point the page at another lake with ',
      el('code', {}, '?lake=<url>'), ' (see web/README.md).'));
}

// ── Loading ─────────────────────────────────────────────────────────────────────────────────

async function rows(engine, sql) {
  return (await engine.sql(sql)).toArray();
}

async function openTables(engine, lake) {
  for (const name of TABLES) {
    const url = new URL(`gold/${name}`, lake).href;
    try {
      await engine.registerDelta(name, url);
    } catch (e) {
      const message = String(e.message ?? e);
      const where = message.includes(url) ? '' : ` at ${url}`;
      throw new Error(`Could not open the gold table ${name}${where}: ${message}`, { cause: e });
    }
  }
}

/** Runs the filtered queries and redraws what depends on the region. */
async function showRegion(engine, region, regionRows, alertCount) {
  const q = filteredQueries(region);
  const [totals] = await rows(engine, q.totals);
  const [{ customers }] = await rows(engine, q.customers);
  const byDay = await rows(engine, q.byDay);
  const segments = await rows(engine, q.segments);
  drawKpis({ ...totals, customers, alerts: alertCount });
  drawRegionChart(regionRows, region);
  drawDayChart(byDay, region);
  drawSegments(segments);
}

async function main() {
  const lake = lakeUrl();
  const lakeText = lake.href.replace(/\/$/, '');
  $('lake-url').textContent = lakeText;
  let engine;
  try {
    const { Medallion } = await import('medallion-lakehouse');
    engine = await Medallion.create();
  } catch (e) {
    throw new Error(`Could not load the Medallion engine (medallion-lakehouse, see the import map in index.html): ${e.message ?? e}`, { cause: e });
  }

  setState('loading', `Reading the gold tables of ${lakeText}…`);
  const started = performance.now();
  await openTables(engine, lake);
  const regionRows = await rows(engine, BY_REGION);
  const alerts = await rows(engine, ALERTS);
  drawAlerts(alerts);
  await showRegion(engine, '', regionRows, alerts.length);
  drawIo('Loaded', engine.stats(), performance.now() - started);

  const select = $('region');
  select.append(...regionRows.map((r) => r.region).sort().map((name) => el('option', { value: name }, name)));
  select.disabled = false;
  select.addEventListener('change', async () => {
    const region = select.value;
    select.disabled = true;
    setState('loading', `Filtering by ${region || 'all regions'}…`);
    engine.resetStats();
    const t = performance.now();
    try {
      await showRegion(engine, region, regionRows, alerts.length);
      drawIo(region ? `Filtered to ${region}` : 'All regions', engine.stats(), performance.now() - t);
      setState('ready');
    } catch (e) {
      showError(e);
    } finally {
      select.disabled = false;
    }
  });

  $('dashboard').hidden = false;
  setState('ready');
}

main().catch(showError);
