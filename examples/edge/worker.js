// Medallion at the edge: a worker that answers SQL over Parquet and Delta tables by URL,
// computed with HTTP range reads, plus the retail demo's gold tables by name. With S3
// credentials in its environment (AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
// optional AWS_SESSION_TOKEN and AWS_ENDPOINT_URL for MinIO, R2 and the like), tables may be
// s3:// locations too, and it runs pipelines whose lake is a bucket.
//
//   GET  /query?sql=SQL&table=NAME=URL[&table=...]   -> {"rows": [...], "stats": {...}}
//   GET  /gold/<table>[?limit=N]                     -> the same, for a gold table of $LAKE_URL
//   POST /pipeline?lake=s3://B/P[&base=s3://B/SRC]   -> the run report; the body is the spec (TOML)
//   GET  /                                           -> this help
//
// One engine per request: a worker isolate may serve many requests, but tables named in one
// request must not leak into another. The compiled module is shared.
import { Medallion } from './wasm/js/index.js';
import wasm from './wasm/pkg/medallion_wasm_bg.wasm';

/** The engine's options: the module, and S3 access when the environment grants it. */
function engineOptions(env) {
  if (!env.AWS_ACCESS_KEY_ID) return { wasm };
  const s3 = {
    region: env.AWS_REGION || 'us-east-1',
    accessKeyId: env.AWS_ACCESS_KEY_ID,
    secretAccessKey: env.AWS_SECRET_ACCESS_KEY,
  };
  if (env.AWS_SESSION_TOKEN) s3.sessionToken = env.AWS_SESSION_TOKEN;
  if (env.AWS_ENDPOINT_URL) s3.endpoint = env.AWS_ENDPOINT_URL;
  return { wasm, s3 };
}

const GOLD = {
  sales_by_region_day: 'SELECT * FROM sales_by_region_day ORDER BY 1, 2',
  customer_segments: 'SELECT * FROM customer_segments ORDER BY 1',
  low_stock_alerts: 'SELECT * FROM low_stock_alerts ORDER BY 1, 2, 3',
};
const MAX_ROWS = 10000;

const json = (body, status = 200) =>
  new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json; charset=utf-8' } });

async function answer(env, tables, sql, limit) {
  const started = Date.now();
  const m = await Medallion.create(engineOptions(env));
  try {
    for (const [name, url] of tables) await m.register(name, url);
    const result = await m.sql(sql);
    const rows = result.toArray();
    return {
      rows: rows.slice(0, limit),
      truncated: rows.length > limit,
      stats: { ...m.stats(), rows: result.numRows, ms: Date.now() - started },
    };
  } finally {
    m.close();
  }
}

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    try {
      if (url.pathname === '/query') {
        const sql = url.searchParams.get('sql');
        if (!sql) return json({ error: 'missing ?sql=' }, 400);
        const tables = [];
        for (const t of url.searchParams.getAll('table')) {
          const at = t.indexOf('=');
          if (at <= 0) return json({ error: `table=${t}: expected NAME=URL` }, 400);
          tables.push([t.slice(0, at), t.slice(at + 1)]);
        }
        const limit = Number(url.searchParams.get('limit') ?? MAX_ROWS);
        return json(await answer(env, tables, sql, Math.min(limit, MAX_ROWS)));
      }
      if (url.pathname === '/pipeline') {
        if (request.method !== 'POST') return json({ error: 'POST the pipeline spec (TOML) to /pipeline?lake=s3://...' }, 405);
        const lake = url.searchParams.get('lake');
        if (!lake?.startsWith('s3://')) return json({ error: 'missing ?lake=s3://bucket/prefix (a worker keeps no files)' }, 400);
        const m = await Medallion.create(engineOptions(env));
        try {
          const options = { lake };
          if (url.searchParams.has('base')) options.base = url.searchParams.get('base');
          return json(await m.runPipeline(await request.text(), options));
        } finally {
          m.close();
        }
      }
      const gold = /^\/gold\/(\w+)$/.exec(url.pathname);
      if (gold) {
        const name = gold[1];
        if (!GOLD[name]) return json({ error: `no gold table ${name}; try ${Object.keys(GOLD).join(', ')}` }, 404);
        if (!env.LAKE_URL) return json({ error: 'LAKE_URL is not set: start the worker with LAKE_URL=<lake served over HTTP>' }, 500);
        const location = `${env.LAKE_URL.replace(/\/$/, '')}/gold/${name}`;
        const limit = Number(url.searchParams.get('limit') ?? MAX_ROWS);
        return json(await answer(env, [[name, location]], GOLD[name], Math.min(limit, MAX_ROWS)));
      }
      if (url.pathname === '/') {
        return new Response(
          'Medallion edge worker\n\n' +
            'GET  /query?sql=SQL&table=NAME=URL   SQL over Parquet files / Delta tables by URL or s3:// (table= repeats)\n' +
            `GET  /gold/<table>                   ${Object.keys(GOLD).join(', ')} from $LAKE_URL\n` +
            'POST /pipeline?lake=s3://B/P&base=s3://B/SRC   run the pipeline spec in the body into a bucket (needs AWS_* credentials)\n',
          { headers: { 'content-type': 'text/plain; charset=utf-8' } },
        );
      }
      return json({ error: `no route ${url.pathname}` }, 404);
    } catch (e) {
      // Errors name the URL, byte range or table: pass them on to the caller.
      return json({ error: String(e.message ?? e), trapped: !!e.trapped }, 422);
    }
  },
};
