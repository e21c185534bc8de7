// DuckDB-WASM 1.28.0 (the last release with Parquet built in) in the browser benchmark, driven by
// ../browser.mjs through `window.bench`: the EH bundle in a Worker, tables registered with
// registerFileURL(HTTP), which DuckDB reads with synchronous range XHRs from its worker.
import { checkNumber, errorText } from './check.js';

const DIST = '/tests/bench/.data/npm/node_modules/duckdb-wasm-1.28/dist/';
let duckdb, db, conn;

window.bench = {
  /** Import, Worker, download + compile + instantiate the module, open a database, connect. */
  async init() {
    const t0 = performance.now();
    duckdb = await import(`${DIST}duckdb-browser.mjs`);
    const worker = new Worker(`${DIST}duckdb-browser-eh.worker.js`);
    db = new duckdb.AsyncDuckDB(new duckdb.VoidLogger(), worker);
    await db.instantiate(`${DIST}duckdb-eh.wasm`);
    await db.open({ path: ':memory:', query: { castBigIntToDouble: true, castDecimalToDouble: true } });
    conn = await db.connect();
    const initMs = performance.now() - t0;
    const v = (await conn.query('SELECT version() AS v')).toArray()[0].toJSON().v;
    return { initMs, version: `@duckdb/duckdb-wasm 1.28.0 (DuckDB ${v}, eh bundle)` };
  },

  /**
   * Runs one query (SQL that says read_parquet('<name>.parquet')); with `tables` ({name: url}) it
   * registers '<name>.parquet' first, inside the timing, as Medallion's registration is.
   */
  async run(queryId, sql, tables) {
    try {
      const t0 = performance.now();
      for (const [name, url] of Object.entries(tables ?? {})) {
        await db.registerFileURL(`${name}.parquet`, url, duckdb.DuckDBDataProtocol.HTTP, false);
      }
      const t1 = performance.now();
      const rows = (await conn.query(sql)).toArray().map((r) => r.toJSON());
      const ms = performance.now() - t0;
      return { ms, registerMs: t1 - t0, rows: rows.length, check: checkNumber(queryId, rows) };
    } catch (e) {
      return { error: errorText(e) };
    }
  },
};
