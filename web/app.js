// The retail dashboard: KPIs, charts, segments and low-stock alerts from the retail demo's gold
// tables, read straight from a lake served over HTTP. The Medallion engine (the npm package,
// WebAssembly) runs the SQL in the page and fetches only the byte ranges each query needs; the
// footer says how many requests and bytes that took. No server code: the lake's URL comes from
// `?lake=<url>` (default `./lake`, next to this page).
//
// - Filters (dates, region, category) re-run every panel's queries. A panel whose table has no
//   such column says so under it (`.applies`, `data-ignores`) instead of ignoring it silently.
// - Table history: opening it reads the gold tables' Delta logs (commit times) and offers the
//   points in time where the tables changed; choosing one registers each table at its version
//   then (`registerDelta(name, url, { version })`) and redraws everything.
// - Pipeline health and live alerts come from `medallion serve --run PIPELINE.toml --watch`
//   (`./api/report`, `./api/alerts` as Server-Sent Events). The page asks for them only when
//   opened with `?live` or when the user presses "Connect": a server without a pipeline answers
//   404, which a browser logs as an error, so the page does not probe on every load.
//
// The page's state is on <body data-state="loading|ready|error">; numbers that tests compare
// carry their exact value in data-* attributes.

const TABLES = ['sales_by_region_day', 'customer_segments', 'low_stock_alerts'];

/** Which column of each gold table a filter applies to, and why not when it has none. */
const COLUMNS = {
  sales_by_region_day: { dates: 'day', region: 'region', category: null },
  customer_segments: { dates: null, region: 'region', category: null },
  low_stock_alerts: { dates: null, region: null, category: 'category' },
};
const WHY_NOT = {
  sales_by_region_day: { category: 'sales_by_region_day has no category column' },
  customer_segments: {
    dates: 'customer_segments has one row per customer over all of their orders, not per day',
    category: 'customer_segments has no category column',
  },
  low_stock_alerts: {
    dates: 'the alerts are of the latest stock snapshot, not of a date range',
    region: 'stock is kept per warehouse, not per region',
  },
};
const FILTER_NAMES = { dates: 'date range', region: 'region', category: 'category' };

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

function timeLabel(ms) {
  const d = new Date(ms);
  return Number.isNaN(d.getTime()) ? '–' : d.toLocaleString('en-US', {
    month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false,
  });
}

/** The lake's URL as a folder URL (trailing slash), resolved against the page. */
function lakeUrl() {
  const given = new URLSearchParams(location.search).get('lake') || './lake';
  return new URL(given.replace(/\/*$/, '/'), location.href);
}

const pad = (version) => String(version).padStart(20, '0');

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

// ── Filters ─────────────────────────────────────────────────────────────────────────────────

/** What the filter controls say; `days` are the days the sales table has, in order. */
function readFilters(days) {
  const from = $('from').value || days[0];
  const to = $('to').value || days.at(-1);
  return {
    from, to,
    dates: days.length > 0 && (from !== days[0] || to !== days.at(-1)),
    region: $('region').value,
    category: $('category').value,
  };
}

/** The WHERE clause of `table` under the filters (empty when none applies). */
function where(table, f) {
  const c = COLUMNS[table];
  const terms = [];
  if (f.dates && c.dates) terms.push(`${c.dates} BETWEEN DATE ${sqlString(f.from)} AND DATE ${sqlString(f.to)}`);
  if (f.region && c.region) terms.push(`${c.region} = ${sqlString(f.region)}`);
  if (f.category && c.category) terms.push(`${c.category} = ${sqlString(f.category)}`);
  return terms.length ? `WHERE ${terms.join(' AND ')}` : '';
}

/** The active filters that do not apply to `table`, as [filter, why]. */
function ignored(table, f) {
  return Object.keys(FILTER_NAMES).filter((k) => f[k] && !COLUMNS[table][k]).map((k) => [k, WHY_NOT[table][k]]);
}

function describeFilters(f) {
  const parts = [];
  if (f.dates) parts.push(f.from === f.to ? dayLabel(f.from) : `${dayLabel(f.from)}–${dayLabel(f.to)}`);
  if (f.region) parts.push(f.region);
  if (f.category) parts.push(f.category);
  return parts.join(', ');
}

/**
 * The note under a panel: which active filters its numbers ignore and why. `parts` are
 * [what the panel shows, its table]; `extra` adds a sentence of its own.
 */
function drawApplies(node, f, parts, extra = '') {
  const notes = [];
  const keys = new Set();
  for (const [what, table] of parts) {
    for (const [key, why] of ignored(table, f)) {
      keys.add(key);
      notes.push(`The ${FILTER_NAMES[key]} filter does not apply to ${what}: ${why}.`);
    }
  }
  if (extra) notes.push(extra);
  node.dataset.ignores = [...keys].sort().join(' ');
  node.textContent = notes.join(' ');
}

function queries(f) {
  const sales = where('sales_by_region_day', f);
  const salesByDate = where('sales_by_region_day', { ...f, region: '' });
  const segments = where('customer_segments', f);
  const alerts = where('low_stock_alerts', f);
  return {
    // Each order has one region and one day, so summing the per-(region, day) distinct order
    // counts gives the distinct orders.
    totals: `SELECT round(sum(revenue), 2) AS revenue, sum(orders) AS orders, sum(units) AS units
      FROM sales_by_region_day ${sales}`,
    // Every region, so that the chart compares them; the region filter highlights one.
    byRegion: `SELECT region, round(sum(revenue), 2) AS revenue
      FROM sales_by_region_day ${salesByDate} GROUP BY region ORDER BY revenue DESC, region`,
    byDay: `SELECT day, round(sum(revenue), 2) AS revenue
      FROM sales_by_region_day ${sales} GROUP BY day ORDER BY day`,
    customers: `SELECT count(*) AS customers FROM customer_segments ${segments}`,
    segments: `SELECT segment, count(*) AS customers, round(sum(monetary), 2) AS monetary,
      round(avg(monetary), 2) AS per_customer
      FROM customer_segments ${segments} GROUP BY segment ORDER BY monetary DESC, segment`,
    alerts: `SELECT snapshot_date, warehouse, product_id, name, category, on_hand, reorder_level, shortfall
      FROM low_stock_alerts ${alerts} ORDER BY shortfall DESC, product_id, warehouse`,
  };
}

/** Refills a <select>, keeping its value when still offered, else `fallback`. */
function fillSelect(select, options, fallback) {
  const keep = select.value;
  const fixed = [...select.options].filter((o) => o.dataset.fixed !== undefined);
  select.replaceChildren(...fixed, ...options.map(([value, label]) => el('option', { value }, label)));
  select.value = options.some(([v]) => v === keep) || fixed.some((o) => o.value === keep) ? keep : fallback;
}

/** The choices the filters offer at the tables' current versions. */
async function loadChoices(engine) {
  const days = (await rows(engine, 'SELECT DISTINCT day FROM sales_by_region_day ORDER BY day')).map((r) => String(r.day));
  const regions = (await rows(engine, 'SELECT DISTINCT region FROM sales_by_region_day ORDER BY region')).map((r) => r.region);
  const categories = (await rows(engine, 'SELECT DISTINCT category FROM low_stock_alerts ORDER BY category')).map((r) => r.category);
  const dayOptions = days.map((d) => [d, dayLabel(d)]);
  // A range that covered every day keeps doing so when another version has other days.
  const whole = $('from').selectedIndex <= 0 && $('to').selectedIndex === $('to').options.length - 1;
  fillSelect($('from'), dayOptions, days[0] ?? '');
  fillSelect($('to'), dayOptions, days.at(-1) ?? '');
  if (whole) {
    $('from').value = days[0] ?? '';
    $('to').value = days.at(-1) ?? '';
  }
  fillSelect($('region'), regions.map((r) => [r, r]), '');
  fillSelect($('category'), categories.map((c) => [c, c]), '');
  return days;
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
/** A chart's width in CSS pixels, so that its 12 px text stays 12 px on a phone. */
const chartWidth = (id) => Math.round(Math.min(640, Math.max(280, $(id).clientWidth || 420)));

function drawRegionChart(rows, selected) {
  const width = chartWidth('region-chart'), rowHeight = 34, left = 70, right = 56;
  const height = Math.max(1, rows.length) * rowHeight + 8;
  const max = Math.max(0, ...rows.map((r) => r.revenue)) || 1;
  const chart = svg('svg', {
    viewBox: `0 0 ${width} ${height}`, class: selected ? 'chart filtered' : 'chart', role: 'img',
    'aria-label': rows.length
      ? `Revenue by region: ${rows.map((r) => `${r.region} ${money.format(r.revenue)}`).join(', ')}`
      : 'Revenue by region: no sales',
  });
  if (!rows.length) chart.append(svg('text', { x: width / 2, y: height / 2, 'text-anchor': 'middle', class: 'axis' }, 'No sales in this selection'));
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
function drawDayChart(rows, what) {
  const width = chartWidth('day-chart'), height = 220, m = { top: 12, right: 22, bottom: 28, left: 46 };
  const plotW = width - m.left - m.right, plotH = height - m.top - m.bottom;
  const max = niceMax(Math.max(0, ...rows.map((r) => r.revenue)));
  const x = (i) => m.left + (rows.length > 1 ? (i * plotW) / (rows.length - 1) : plotW / 2);
  const y = (v) => m.top + plotH - (v / max) * plotH;
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
  if (!rows.length) chart.append(svg('text', { x: m.left + plotW / 2, y: m.top + plotH / 2, 'text-anchor': 'middle', class: 'axis' }, 'No sales in this selection'));
  const every = Math.ceil(rows.length / Math.max(2, Math.min(7, Math.floor(plotW / 64))));
  rows.forEach((r, i) => {
    if (i % every === 0 || i === rows.length - 1) {
      chart.append(svg('text', { x: x(i), y: height - 8, 'text-anchor': 'middle', class: 'axis' }, dayLabel(r.day)));
    }
  });
  chart.append(svg('polyline', { class: 'line', points: rows.map((r, i) => `${x(i).toFixed(1)},${y(r.revenue).toFixed(1)}`).join(' ') }));
  rows.forEach((r, i) => chart.append(svg('circle', { cx: x(i).toFixed(1), cy: y(r.revenue).toFixed(1), r: 4, class: 'point', 'data-day': r.day, 'data-value': r.revenue },
    svg('title', {}, `${dayLabel(r.day)}: ${money.format(r.revenue)}`))));
  $('day-chart').replaceChildren(chart);
}

function drawSegments(rows) {
  const body = $('segments').tBodies[0];
  if (!rows.length) {
    body.replaceChildren(el('tr', { class: 'empty' }, el('td', { colspan: 4 }, 'No customers in this selection.')));
    return;
  }
  body.replaceChildren(...rows.map((r) =>
    el('tr', { 'data-segment': r.segment, 'data-customers': r.customers, 'data-monetary': r.monetary },
      el('th', { scope: 'row' }, r.segment.replace('_', ' ')),
      el('td', { class: 'num' }, integer.format(r.customers)),
      el('td', { class: 'num' }, money.format(r.monetary)),
      el('td', { class: 'num' }, money.format(r.per_customer)))));
}

function drawAlerts(rows, category) {
  const table = $('alerts');
  const dates = [...new Set(rows.map((r) => r.snapshot_date))];
  const what = category ? ` in ${category}` : '';
  $('alerts-summary').textContent = rows.length
    ? `${rows.length} stock positions${what} below their reorder level in the snapshot of ${dates.map(dayLabel).join(', ')}, largest shortfall first`
    : `No product${what} is below its reorder level.`;
  table.tBodies[0].replaceChildren(...rows.map((r) =>
    el('tr', { 'data-shortfall': r.shortfall, 'data-product': r.product_id, 'data-warehouse': r.warehouse },
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
  io.dataset.cacheHits = stats.cacheHits;
  io.dataset.bytesFromCache = stats.bytesFromCache;
  const memory = stats.cacheHits
    ? `; ${kib(stats.bytesFromCache)} came from memory (${integer.format(stats.cacheHits)} reads)`
    : '';
  io.textContent = `${what}: the engine fetched ${kib(stats.bytes)} of the lake in ` +
    `${integer.format(stats.requests)} HTTP requests (byte ranges)${memory}, ${integer.format(Math.round(ms))} ms.`;
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

/** An error of one action (a filter, a version) that leaves the dashboard usable. */
function showActionError(what, error) {
  $('error').hidden = false;
  $('error').replaceChildren(
    el('h2', {}, `${what} failed`),
    el('p', { class: 'message' }, error.message ?? String(error)));
}

// ── Loading ─────────────────────────────────────────────────────────────────────────────────

async function rows(engine, sql) {
  return (await engine.sql(sql)).toArray();
}

/** Registers the gold tables, each at `versions[name]` when given, else the latest. */
async function openTables(engine, lake, versions = {}) {
  for (const name of TABLES) {
    const url = new URL(`gold/${name}`, lake).href;
    try {
      if (versions[name] === undefined) await engine.registerDelta(name, url);
      else await engine.registerDelta(name, url, { version: versions[name] });
    } catch (e) {
      const message = String(e.message ?? e);
      const where = message.includes(url) ? '' : ` at ${url}`;
      const at = versions[name] === undefined ? '' : ` version ${versions[name]}`;
      throw new Error(`Could not open the gold table ${name}${at}${where}: ${message}`, { cause: e });
    }
  }
}

/** Redraws the charts from the last query results (at another width). */
let drawCharts = () => {};
let resizing;
addEventListener('resize', () => {
  clearTimeout(resizing);
  resizing = setTimeout(() => drawCharts(), 150);
});

/** Runs every panel's queries under the filters and redraws the panels. */
async function showPanels(engine, f) {
  const q = queries(f);
  const [totals] = await rows(engine, q.totals);
  const [{ customers }] = await rows(engine, q.customers);
  const byRegion = await rows(engine, q.byRegion);
  const byDay = await rows(engine, q.byDay);
  const segments = await rows(engine, q.segments);
  const alerts = await rows(engine, q.alerts);
  drawKpis({ ...totals, customers, alerts: alerts.length });
  drawCharts = () => {
    drawRegionChart(byRegion, f.region);
    drawDayChart(byDay, f.region ? `Revenue by day in ${f.region}` : 'Revenue by day');
  };
  drawCharts();
  drawSegments(segments);
  drawAlerts(alerts, f.category);

  const panel = (name) => document.querySelector(`[data-panel="${name}"] .applies, p.applies[data-panel="${name}"]`);
  drawApplies(panel('kpis'), f, [
    ['revenue, orders and units', 'sales_by_region_day'],
    ['customers', 'customer_segments'],
    ['low-stock alerts', 'low_stock_alerts'],
  ]);
  drawApplies(panel('region'), f, [['revenue by region', 'sales_by_region_day']],
    f.region ? `The region filter highlights ${f.region}; the bars compare every region.` : '');
  drawApplies(panel('day'), f, [['revenue by day', 'sales_by_region_day']]);
  drawApplies(panel('segments'), f, [['customer segments', 'customer_segments']]);
  drawApplies(panel('alerts'), f, [['low-stock alerts', 'low_stock_alerts']]);
}

// ── Table history ───────────────────────────────────────────────────────────────────────────

/** A table's commits from its Delta log: version, time, operation, run. */
async function tableHistory(lake, name) {
  const commits = [];
  for (let version = 0; version < 10000; version++) {
    const url = new URL(`gold/${name}/_delta_log/${pad(version)}.json`, lake);
    const response = await fetch(url);
    if (response.status === 404) break;
    if (!response.ok) throw new Error(`Reading ${url.href} failed: HTTP ${response.status}`);
    const info = (await response.text()).split('\n').filter(Boolean).map((l) => JSON.parse(l)).find((a) => a.commitInfo)?.commitInfo ?? {};
    commits.push({ table: name, version, timestamp: info.timestamp, operation: info.operation ?? '', run: info.medallion?.runId });
  }
  if (!commits.length) {
    throw new Error(`The log of ${name} has no version 0 (cleaned up after a checkpoint): its history cannot be listed`);
  }
  return commits;
}

/**
 * The points in time where the gold tables changed, newest first: each with the version every
 * table had then. Commits of one pipeline run form one point.
 */
function historyPoints(histories) {
  const commits = histories.flat().sort((a, b) => a.timestamp - b.timestamp);
  const groups = new Map();
  for (const c of commits) {
    const key = c.run ?? `t${c.timestamp}`;
    const g = groups.get(key) ?? { key, timestamp: 0 };
    g.timestamp = Math.max(g.timestamp, c.timestamp);
    groups.set(key, g);
  }
  const points = [];
  for (const g of [...groups.values()].sort((a, b) => a.timestamp - b.timestamp)) {
    const versions = {};
    for (const h of histories) {
      const last = h.filter((c) => c.timestamp <= g.timestamp).at(-1);
      if (last) versions[last.table] = last.version;
    }
    if (Object.keys(versions).length !== TABLES.length) continue;
    const same = points.at(-1) && TABLES.every((t) => points.at(-1).versions[t] === versions[t]);
    if (same) points.at(-1).timestamp = g.timestamp;
    else points.push({ timestamp: g.timestamp, versions });
  }
  return points.reverse();
}

const versionsText = (versions) => TABLES.map((t) => `${t} v${versions[t]}`).join(', ');

function drawVersions(histories, shown) {
  $('versions').tBodies[0].replaceChildren(...histories.flat()
    .sort((a, b) => b.timestamp - a.timestamp || a.table.localeCompare(b.table))
    .map((c) => el('tr', { 'data-table': c.table, 'data-version': c.version, class: shown[c.table] === c.version ? 'shown' : null },
      el('th', { scope: 'row' }, c.table),
      el('td', { class: 'num' }, String(c.version)),
      el('td', {}, timeLabel(c.timestamp)),
      el('td', {}, c.operation))));
}

// ── Pipeline health and live alerts ─────────────────────────────────────────────────────────

const apiUrl = (name) => new URL(`api/${name}`, location.href);

/** Commit times of (table, version), read once from the lake's logs. */
const commitTimes = new Map();
async function commitTime(lake, layer, table, version) {
  const key = `${layer}/${table}@${version}`;
  if (!commitTimes.has(key)) {
    commitTimes.set(key, (async () => {
      const r = await fetch(new URL(`${layer}/${table}/_delta_log/${pad(version)}.json`, lake));
      if (!r.ok) return null;
      const info = (await r.text()).split('\n').filter(Boolean).map((l) => JSON.parse(l)).find((a) => a.commitInfo);
      return info?.commitInfo?.timestamp ?? null;
    })().catch(() => null));
  }
  return commitTimes.get(key);
}

const SERVE_RUN = () => el('code', {}, 'medallion serve --run PIPELINE.toml --watch');

/** The health panel's "not available" state; `parts` say why (text or nodes). */
function notAvailable(...parts) {
  $('health').dataset.live = 'off';
  $('health-table').hidden = true;
  $('health-note').hidden = true;
  $('health-status').replaceChildren(
    el('strong', {}, 'Not available. '), ...parts, ' ',
    el('button', { type: 'button', id: 'connect', class: 'link' }, 'Connect'));
  $('connect').addEventListener('click', () => live.start(), { once: true });
}

async function drawHealth(lake, { report, batch }) {
  const tables = report.tables ?? [];
  const times = await Promise.all(tables.map((t) => (t.version === null || t.version === undefined ? null : commitTime(lake, t.layer, t.table, t.version))));
  $('health').dataset.live = 'on';
  $('health').dataset.runId = report.run_id;
  const failing = tables.reduce((n, t) => n + (t.expectations ?? []).filter((e) => e.violations > 0).length, 0);
  const last = Math.max(0, ...times.filter(Boolean));
  $('health-status').replaceChildren(
    el('span', { class: report.ok ? 'ok' : 'bad' }, report.ok ? 'Last run succeeded' : 'Last run failed'),
    ` — pipeline ${report.pipeline}, run ${report.run_id}${batch ? `, batch ${batch.batch}` : ''}` +
    `${last ? `, last commit ${timeLabel(last)}` : ''}, ${integer.format(Math.round(report.elapsed_ms ?? 0))} ms; ` +
    `${failing ? `${failing} failing expectation${failing > 1 ? 's' : ''}` : 'no failing expectations'}.`);
  $('health-table').hidden = false;
  $('health-note').hidden = false;
  $('health-table').tBodies[0].replaceChildren(...tables.map((t, i) => {
    const failed = (t.expectations ?? []).filter((e) => e.violations > 0);
    return el('tr', {
      'data-table': t.table, 'data-version': t.version ?? '', 'data-rows': t.rows_out,
      'data-dropped': t.dropped, 'data-quarantined': t.quarantined, 'data-failing': failed.map((e) => e.name).join(' '),
      'data-committed': times[i] ?? '',
      class: failed.some((e) => e.on_violation === 'fail') ? 'bad' : null,
    },
    el('th', { scope: 'row' }, t.table),
    el('td', {}, t.layer),
    el('td', { class: 'num' }, t.version === null || t.version === undefined ? 'unchanged' : String(t.version)),
    el('td', { class: 'num' }, integer.format(t.rows_out)),
    el('td', { class: 'num' }, integer.format(t.dropped ?? 0)),
    el('td', { class: 'num' }, integer.format(t.quarantined ?? 0)),
    el('td', {}, times[i] ? timeLabel(times[i]) : '–'),
    el('td', { class: failed.length ? 'failing' : 'muted' }, failed.length
      ? failed.map((e) => `${e.name} (${integer.format(e.violations)} rows, ${e.on_violation})`).join('; ')
      : 'none'));
  }));
}

function drawLiveAlert(alert, id) {
  const list = $('live-alerts');
  const details = Object.entries(alert.row ?? {})
    .filter(([k]) => !(k in (alert.key ?? {})))
    .map(([k, v]) => `${k} ${v}`).join(', ');
  const key = Object.entries(alert.key ?? {}).map(([k, v]) => `${k} ${v}`).join(', ');
  list.prepend(el('li', { 'data-id': id, 'data-table': alert.table, 'data-key': JSON.stringify(alert.key ?? {}), 'data-shown': Date.now() },
    el('strong', {}, alert.table), ` ${key}`,
    el('span', { class: 'muted' }, ` — ${details}`),
    el('time', { datetime: alert.at ?? '' }, alert.at ? timeLabel(Date.parse(alert.at)) : '')));
  while (list.children.length > 50) list.lastElementChild.remove();
  $('live-status').textContent = `Connected: ${list.children.length} alert${list.children.length > 1 ? 's' : ''} since this page opened, newest first.`;
}

/** Polls ./api/report and listens to ./api/alerts once started. */
const live = {
  lake: null,
  started: false,
  /** The run of the last report seen; a new run that committed gold tables calls onGoldCommit. */
  lastRun: undefined,
  onGoldCommit: null,
  timer: null,
  async start() {
    if (this.started) return;
    this.started = true;
    $('health-status').textContent = 'Connecting to the pipeline…';
    $('live-status').textContent = 'Connecting to the alert stream…';
    if (await this.poll()) this.listen();
  },
  /** One look at ./api/report; false when this server runs no pipeline. */
  async poll() {
    let response;
    try {
      response = await fetch(apiUrl('report'), { cache: 'no-store' });
    } catch (e) {
      this.stop(`The server did not answer ${apiUrl('report').pathname}: ${e.message ?? e}.`, ' Try again:');
      return false;
    }
    if (response.status === 503) {
      $('health-status').textContent = 'The pipeline\'s first run has not finished yet…';
      this.timer = setTimeout(() => this.poll(), 1000);
      return true;
    }
    const body = await response.json().catch(() => null);
    if (!response.ok || !body?.report) {
      const why = body?.error ? `The server says: ${body.error}.` : `${apiUrl('report').pathname} answered HTTP ${response.status}.`;
      this.stop('Pipeline health and live alerts come from ', SERVE_RUN(), `. ${why}`, ' Try again:');
      return false;
    }
    await drawHealth(this.lake, body);
    const run = body.report.run_id;
    if (this.lastRun !== undefined && run !== this.lastRun) {
      const gold = body.report.tables.filter((t) => TABLES.includes(t.table) && t.version !== null && t.version !== undefined);
      if (gold.length) this.onGoldCommit?.(gold);
    }
    this.lastRun = run;
    this.timer = setTimeout(() => this.poll(), 3000);
    return true;
  },
  listen() {
    const source = new EventSource(apiUrl('alerts'));
    source.addEventListener('open', () => {
      if (!$('live-alerts').children.length) $('live-status').textContent = 'Connected: alerts appear here as the pipeline commits them, newest first.';
    });
    source.addEventListener('alert', (e) => {
      try {
        drawLiveAlert(JSON.parse(e.data), e.lastEventId);
      } catch (err) {
        $('live-status').textContent = `An alert could not be read: ${err.message}`;
      }
    });
    source.addEventListener('error', () => {
      $('live-status').textContent = source.readyState === EventSource.CLOSED
        ? 'The alert stream closed.'
        : 'The alert stream was interrupted; reconnecting…';
    });
  },
  stop(...why) {
    this.started = false;
    clearTimeout(this.timer);
    notAvailable(...why);
    $('live-status').textContent = 'Not available: no pipeline runs in the server of this page.';
  },
};

// ── Main ────────────────────────────────────────────────────────────────────────────────────

async function main() {
  const lake = lakeUrl();
  const lakeText = lake.href.replace(/\/$/, '');
  $('lake-url').textContent = lakeText;
  live.lake = lake;
  const params = new URLSearchParams(location.search);
  notAvailable('Pipeline health and live alerts come from ', SERVE_RUN(), ': open this page there with ',
    el('code', {}, '?live'), ', or press');
  $('live-status').textContent = 'Not connected (see Pipeline health).';
  // Independent of the gold tables: connect at once so that no alert is missed while they load.
  if (params.has('live') && params.get('live') !== '0') live.start();

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
  let days = await loadChoices(engine);
  await showPanels(engine, readFilters(days));
  drawIo('Loaded', engine.stats(), performance.now() - started);

  const controls = ['from', 'to', 'region', 'category', 'reset', 'as-of'].map($);
  /** Runs `work` with the controls disabled and the loading state shown. */
  let working = false;
  const busy = async (status, what, work) => {
    working = true;
    for (const c of controls) c.disabled = true;
    setState('loading', status);
    engine.resetStats();
    const t = performance.now();
    try {
      const done = await work();
      drawIo(done, engine.stats(), performance.now() - t);
      $('error').hidden = true;
    } catch (e) {
      showActionError(what, e);
    } finally {
      setState('ready');
      // The version choice waits for the history to be read.
      for (const c of controls) c.disabled = c.id === 'as-of' && !histories.length;
      working = false;
    }
  };

  const refilter = (event) => {
    // A range that ends before it starts: move the other end.
    if (event?.target === $('from') && $('from').value > $('to').value) $('to').value = $('from').value;
    if (event?.target === $('to') && $('to').value < $('from').value) $('from').value = $('to').value;
    const f = readFilters(days);
    const described = describeFilters(f);
    return busy(`Filtering${described ? ` by ${described}` : ''}…`, 'Filtering', async () => {
      await showPanels(engine, f);
      return described ? `Filtered to ${described}` : 'No filters';
    });
  };
  for (const id of ['from', 'to', 'region', 'category']) $(id).addEventListener('change', refilter);
  $('reset').addEventListener('click', () => {
    $('from').value = days[0];
    $('to').value = days.at(-1);
    $('region').value = '';
    $('category').value = '';
    refilter();
  });

  // Table history: read the logs when first opened (not on load: it is a few more requests).
  let points = [];
  let histories = [];
  $('history').addEventListener('toggle', async () => {
    if (!$('history').open || histories.length) return;
    $('history-status').textContent = 'Reading the gold tables\' logs…';
    try {
      histories = await Promise.all(TABLES.map((t) => tableHistory(lake, t)));
      points = historyPoints(histories);
      const latest = points[0]?.versions ?? {};
      fillSelect($('as-of'), points.slice(1).map((p, i) => [String(i + 1), `${timeLabel(p.timestamp)} (${versionsText(p.versions)})`]), '');
      $('as-of').options[0].textContent = `the latest versions (${versionsText(latest)})`;
      drawVersions(histories, latest);
      $('history-status').textContent = points.length > 1
        ? `${points.length} points in time where the gold tables changed.`
        : 'The gold tables have one version each: there is no earlier state to show.';
      $('as-of').disabled = false;
    } catch (e) {
      histories = [];
      $('history-status').textContent = `The history could not be read: ${e.message ?? e}`;
    }
  });
  $('as-of').addEventListener('change', () => {
    const point = points[Number($('as-of').value || 0)];
    const latest = !$('as-of').value;
    if (!latest && !point) return;
    const versions = latest ? {} : point.versions;
    return busy(latest ? 'Reading the latest versions…' : `Reading the gold tables as of ${timeLabel(point.timestamp)}…`, 'Time travel', async () => {
      await openTables(engine, lake, versions);
      days = await loadChoices(engine);
      await showPanels(engine, readFilters(days));
      const shown = point?.versions ?? {};
      drawVersions(histories, shown);
      document.body.dataset.versions = latest ? '' : JSON.stringify(versions);
      $('history-summary').textContent = latest ? 'showing the latest versions' : `showing ${versionsText(versions)}`;
      $('as-of-badge').hidden = latest;
      $('as-of-badge').textContent = latest ? '' : `as of ${timeLabel(point.timestamp)}`;
      return latest ? 'Latest versions' : `As of ${timeLabel(point.timestamp)}`;
    });
  });

  // A watched pipeline committed new versions of the gold tables: showing the latest, reread
  // them; showing an earlier version, say so and leave the choice to the user.
  const refreshLatest = () => busy('Reading the new versions of the gold tables…', 'Refreshing', async () => {
    await openTables(engine, lake);
    days = await loadChoices(engine);
    await showPanels(engine, readFilters(days));
    return 'New versions';
  });
  /** Back to the latest versions, with the history (now out of date) read again when open. */
  const backToLatest = async () => {
    histories = [];
    points = [];
    fillSelect($('as-of'), [], '');
    $('as-of').options[0].textContent = 'the latest versions';
    $('versions').tBodies[0].replaceChildren();
    $('history-status').textContent = '';
    $('history-summary').textContent = 'showing the latest versions';
    $('as-of-badge').hidden = true;
    document.body.dataset.versions = '';
    await refreshLatest();
    if ($('history').open) $('history').dispatchEvent(new Event('toggle'));
  };
  live.onGoldCommit = (gold) => {
    const what = gold.map((t) => `${t.table} v${t.version}`).join(', ');
    $('new-data').dataset.versions = JSON.stringify(Object.fromEntries(gold.map((t) => [t.table, t.version])));
    if (!$('as-of').value && !working) {
      $('new-data').textContent = `Updated with the pipeline's commit of ${what}.`;
      backToLatest();
    } else {
      $('new-data').replaceChildren(`The pipeline committed ${what}. `,
        el('button', { type: 'button', class: 'link', id: 'show-latest' }, 'Show the latest versions'));
      $('show-latest').addEventListener('click', () => {
        $('new-data').textContent = '';
        backToLatest();
      });
    }
  };

  for (const c of controls) c.disabled = c.id === 'as-of';
  $('dashboard').hidden = false;
  drawCharts(); // now that the charts' cards have a width
  setState('ready');
}

main().catch(showError);
