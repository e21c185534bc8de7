// The query shapes every runtime must answer exactly as the native CLI does. Pure ESM with no
// Node imports: Node, the browser page and the edge worker's test all load it.

/** Cases over the retail demo served at `base` (tables as [name, url, kind]). */
export function queryCases(base) {
  const data = `${base}/tests/js/.work/retail/data`;
  const lake = `${base}/tests/js/.work/lake`;
  const inventory = `${data}/inventory/inventory-0000.parquet`;
  return [
    { name: 'count over a Parquet file', tables: [['inv', inventory, 'parquet']], sql: 'SELECT count(*) AS n FROM inv' },
    {
      name: 'point lookup with a filter',
      tables: [['inv', inventory, 'parquet']],
      sql: 'SELECT * FROM inv WHERE product_id = 7 ORDER BY warehouse',
    },
    {
      name: 'group by with aggregates',
      tables: [['inv', inventory, 'parquet']],
      sql: 'SELECT warehouse, count(*) AS n, sum(on_hand) AS on_hand, min(product_id) AS lo, max(product_id) AS hi FROM inv GROUP BY warehouse ORDER BY warehouse',
    },
    {
      name: 'Delta gold table',
      tables: [['sales', `${lake}/gold/sales_by_region_day`, 'delta']],
      sql: 'SELECT * FROM sales ORDER BY 1, 2',
    },
    {
      name: 'join of two Delta silver tables',
      tables: [
        ['lines', `${lake}/silver/order_lines`, 'delta'],
        ['customers', `${lake}/silver/customers`, 'delta'],
      ],
      sql: 'SELECT c.region, count(*) AS lines, round(sum(l.amount), 2) AS revenue FROM lines l JOIN customers c ON l.customer_id = c.customer_id GROUP BY c.region ORDER BY c.region',
    },
    {
      name: 'window function and strings',
      tables: [['customers', `${lake}/silver/customers`, 'delta']],
      sql: "SELECT region, upper(name) AS name, row_number() OVER (PARTITION BY region ORDER BY customer_id) AS rn FROM customers QUALIFY rn <= 2 ORDER BY region, rn",
    },
  ];
}

/** Gold tables of the retail pipeline, compared after a whole pipeline run. */
export const GOLD = {
  sales_by_region_day: 'SELECT * FROM sales_by_region_day ORDER BY 1, 2',
  customer_segments: 'SELECT * FROM customer_segments ORDER BY 1',
  low_stock_alerts: 'SELECT * FROM low_stock_alerts ORDER BY 1, 2, 3',
};

/** Runs each case on a fresh engine; returns { [name]: rows | { error } } and I/O stats. */
export async function runQueryCases(Medallion, cases, createOptions = {}) {
  const out = {};
  for (const c of cases) {
    const m = await Medallion.create(createOptions);
    try {
      for (const [name, url, kind] of c.tables) {
        if (kind === 'delta') await m.registerDelta(name, url);
        else await m.registerParquet(name, url);
      }
      const r = await m.sql(c.sql);
      const rows = r.toArray();
      if (rows.length !== r.numRows) throw new Error(`numRows ${r.numRows} but ${rows.length} rows`);
      out[c.name] = { rows, stats: m.stats(), ipcBytes: r.toIPC().length };
    } catch (e) {
      out[c.name] = { error: String(e.message ?? e) };
    }
  }
  return out;
}

/** Runs the retail pipeline from URLs into the in-memory lake; returns the report and gold rows. */
export async function runRetailPipeline(Medallion, base, spec, sourceFiles) {
  const m = await Medallion.create();
  const events = [];
  const report = await m.runPipeline(spec, {
    base: `${base}/tests/js/.work/retail`,
    files: sourceFiles.map((f) => `${base}/${f}`),
    onProgress: (e) => events.push(e.event),
  });
  const gold = {};
  for (const [name, sql] of Object.entries(GOLD)) gold[name] = (await m.sql(sql)).toArray();
  return { report, gold, events: [...new Set(events)], files: m.lakeFiles().length };
}
