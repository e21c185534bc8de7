// Medallion in the browser benchmark: the npm package as a page imports it (/wasm/js/index.js,
// served from the repository root), driven by ../browser.mjs through `window.bench`.
import { checkNumber, errorText } from './check.js';

const PACKAGE = '/wasm/js/index.js';
const WASM = '/wasm/pkg/medallion_wasm_bg.wasm';
let medallion;
performance.setResourceTimingBufferSize(100000);

/**
 * How the page's requests for `.parquet` files overlapped (Resource Timing, since the last
 * clear): the most in flight at once, and the time at least one was in flight.
 */
function requestOverlap() {
  const spans = performance.getEntriesByType('resource')
    .filter((e) => new URL(e.name).pathname.endsWith('.parquet'))
    .map((e) => [e.startTime, e.responseEnd]);
  const edges = spans.flatMap(([a, b]) => [[a, 1], [b, -1]]).sort((x, y) => x[0] - y[0] || x[1] - y[1]);
  let open = 0;
  let peak = 0;
  let busy = 0;
  let since = 0;
  for (const [t, d] of edges) {
    if (open === 0 && d > 0) since = t;
    open += d;
    peak = Math.max(peak, open);
    if (open === 0) busy += t - since;
  }
  return { requests: spans.length, peakInFlight: peak, networkBusyMs: busy };
}

window.bench = {
  /** Start-up as an application sees it: import the package, then `Medallion.create(options)`. */
  async init(options = {}) {
    const t0 = performance.now();
    const { Medallion } = await import(PACKAGE);
    const t1 = performance.now();
    medallion = await Medallion.create(options);
    const t2 = performance.now();
    return { initMs: t2 - t0, importMs: t1 - t0, createMs: t2 - t1, version: medallion.version };
  },

  /**
   * `Medallion.create()` taken apart (in a page of its own): download the module, compile it,
   * then create from the compiled module (instantiate + engine).
   */
  async startup() {
    const { Medallion } = await import(PACKAGE);
    const t0 = performance.now();
    const bytes = await (await fetch(WASM)).arrayBuffer();
    const t1 = performance.now();
    const module = await WebAssembly.compile(bytes);
    const t2 = performance.now();
    const m = await Medallion.create({ wasm: module });
    const t3 = performance.now();
    return { fetchMs: t1 - t0, compileMs: t2 - t1, instantiateMs: t3 - t2, totalMs: t3 - t0, bytes: bytes.byteLength, version: m.version };
  },

  /**
   * Runs one query; with `tables` ({name: url}) it registers them first, inside the timing (the
   * footer is read then), as DuckDB-WASM reads its footer inside the query.
   */
  async run(queryId, sql, tables) {
    try {
      medallion.resetStats();
      performance.clearResourceTimings();
      const t0 = performance.now();
      for (const [name, url] of Object.entries(tables ?? {})) await medallion.registerParquet(name, url);
      const t1 = performance.now();
      const rows = (await medallion.sql(sql)).toArray();
      const ms = performance.now() - t0;
      return { ms, registerMs: t1 - t0, rows: rows.length, check: checkNumber(queryId, rows), engineStats: medallion.stats(), overlap: requestOverlap() };
    } catch (e) {
      return { error: errorText(e), trapped: e?.trapped === true };
    }
  },
};
