// Medallion for JavaScript: query Parquet and Delta tables by URL with HTTP Range requests, and
// run medallion pipelines, in browsers, Node and edge workers, with lakes in memory or in an
// S3(-compatible) bucket. The engine is the Rust core compiled to WebAssembly (../pkg, made by
// `npm run build`); this file is the API around it: loading the module in each runtime, signing
// S3 requests (secrets stay here, never in the module), plain-object and Arrow IPC results, and
// recovery if the module ever traps (every pending call is rejected with the reason, and the
// next call runs on a fresh instance with the same tables registered).
import * as firstGlue from '../pkg/medallion_wasm.js';

// Resolved lazily: some runtimes (edge workers) give modules no URL to resolve against.
const besideUs = (rel) => new URL(rel, import.meta.url);

/** Every error Medallion rejects with; `trapped` is true if the module had to be restarted. */
export class MedallionError extends Error {
  constructor(message, { trapped = false, cause } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'MedallionError';
    this.trapped = trapped;
  }
}

// The `s3` option: what the engine needs to address a bucket, and the ways to sign.
const S3_ADDRESS = ['endpoint', 'region', 'pathStyle', 'singleWriter'];
const S3_SIGNING = ['accessKeyId', 'secretAccessKey', 'sessionToken', 'sign', 'anonymous'];

/**
 * The `fetch(url, init)` that S3 requests go through, signed as the `s3` option says: SigV4
 * with keys (aws4fetch, loaded only then), the app's `sign` callback (browser pages: its server
 * returns a presigned URL or signed headers), or unsigned for a public bucket. The engine
 * retries; this makes one attempt per call.
 */
async function s3Fetch(s3) {
  const fail = (message, cause) => new MedallionError(`s3 option: ${message}`, cause === undefined ? {} : { cause });
  if (s3 === null || typeof s3 !== 'object') throw fail('expected an object');
  const unknown = Object.keys(s3).filter((k) => !S3_ADDRESS.includes(k) && !S3_SIGNING.includes(k));
  if (unknown.length) throw fail(`unknown field \`${unknown[0]}\`, expected one of ${[...S3_ADDRESS, ...S3_SIGNING].join(', ')}`);
  if (typeof s3.region !== 'string' || !s3.region) throw fail('`region` is required (e.g. "us-east-1"; "auto" for R2)');
  const keys = s3.accessKeyId !== undefined || s3.secretAccessKey !== undefined || s3.sessionToken !== undefined;
  const ways = [keys, s3.sign !== undefined, s3.anonymous === true].filter(Boolean).length;
  if (ways !== 1) {
    throw fail('give exactly one way to sign: accessKeyId and secretAccessKey (Node, edge workers), sign (browser pages: your server signs), or anonymous: true (public buckets)');
  }
  // Each way comes with `signRead`, which signs a request without a body for another fetcher:
  // the Web Workers of the `workers` option read the page's buckets, and keys and the page's
  // `sign` callback stay on the page.
  if (s3.anonymous) {
    return Object.assign((url, init) => fetch(url, init), { signRead: async (request) => request });
  }
  if (s3.sign !== undefined) {
    if (typeof s3.sign !== 'function') throw fail('`sign` must be a function ({ method, url, headers }) => { url, headers }');
    const sign = async ({ method, url, headers }) => {
      const signed = await s3.sign({ method, url, headers });
      if (!signed || (typeof signed.url !== 'string' && !(signed.url instanceof URL))) {
        throw new TypeError(`the s3 sign callback returned ${JSON.stringify(signed)} for ${method} ${url}, not { url, headers }`);
      }
      return { url: String(signed.url), headers: signed.headers ?? headers };
    };
    const send = async (url, init) => {
      const signed = await sign({ method: init.method, url, headers: { ...init.headers } });
      return fetch(signed.url, { ...init, headers: signed.headers });
    };
    return Object.assign(send, { signRead: sign });
  }
  if (typeof s3.accessKeyId !== 'string' || typeof s3.secretAccessKey !== 'string' || !s3.accessKeyId || !s3.secretAccessKey) {
    throw fail('accessKeyId and secretAccessKey must both be given, as strings');
  }
  let AwsClient;
  try {
    ({ AwsClient } = await import('aws4fetch'));
  } catch (e) {
    throw fail(
      `signing with keys needs the aws4fetch package, which could not be loaded (${e.message ?? e}); in a browser page, do not hold keys: sign on your server with the \`sign\` option`,
      e,
    );
  }
  const client = new AwsClient({
    accessKeyId: s3.accessKeyId,
    secretAccessKey: s3.secretAccessKey,
    sessionToken: s3.sessionToken,
    service: 's3',
    region: s3.region,
    retries: 0,
  });
  const signRead = async ({ method, url, headers }) => {
    const signed = await client.sign(url, { method, headers });
    return { url: signed.url, headers: Object.fromEntries(signed.headers) };
  };
  return Object.assign(async (url, init) => fetch(await client.sign(url, init)), { signRead });
}

const WORKERS_CACHE_BYTES = 32 * 1024 * 1024;

let generation = 0;
let glueInUse = false;

const isNode = typeof process !== 'undefined' && !!process.versions?.node;

async function defaultWasmSource() {
  if (isNode) {
    const { readFile } = await import('node:fs/promises');
    return readFile(besideUs('../pkg/medallion_wasm_bg.wasm'));
  }
  return besideUs('../pkg/medallion_wasm_bg.wasm');
}

// Whether the `workers` option can be honoured: Web Workers that take a module script (browsers;
// not Node or edge workers, which run one query at a time on the one engine).
const canStartWorkers = typeof Worker === 'function' && !isNode && typeof WebAssembly?.compile === 'function';

// How long a worker owing an answer may send nothing before the pool ends. A worker answers
// pings whenever its query waits on a read; with its bytes cached it reads none, and computes
// its whole part in one go: under a second for SF1 Q1 in the browser benchmark, so a minute
// of silence means the worker is gone, not busy.
const WORKER_SILENCE_MS = 60_000;
const PING_MS = 5_000;

// Compiled once per URL for every engine's workers (a worker instantiates it without compiling).
const compiledByUrl = new Map();
async function compiledModule(source) {
  if (source instanceof WebAssembly.Module) return source;
  if (source instanceof URL || typeof source === 'string') {
    const url = String(source);
    if (!compiledByUrl.has(url)) {
      const compiling = (async () => {
        const response = await fetch(url);
        if (!response.ok) throw new MedallionError(`could not load Medallion's WebAssembly module for the workers: HTTP ${response.status} from ${url}`);
        return WebAssembly.compile(await response.arrayBuffer());
      })();
      compiledByUrl.set(url, compiling);
      compiling.catch(() => compiledByUrl.delete(url));
    }
    return compiledByUrl.get(url);
  }
  return WebAssembly.compile(source);
}

const COUNTED = ['requests', 'bytes', 'listRequests', 'writeRequests', 'bytesWritten', 'cacheHits', 'bytesFromCache', 'revalidations'];

// Web Workers, each with its own instance of the module and the page's HTTP(S) tables, that run
// the parts of a query split across them (Engine.sqlInParts); the page's engine plans and
// finishes. A worker that traps, or fails to take a table, ends the pool: queries then run
// whole on the page, as without the option (the query under way included).
class WorkerPool {
  #workers = [];
  #pending = new Map();
  #next = 0;
  #latest = [];
  #baseline = [];
  #unsent = new Map();
  #registering = Promise.resolve();
  #heard = [];
  #silenceMs;
  #watch = null;
  #signRead;
  broken = null;

  constructor(silenceMs) {
    this.#silenceMs = silenceMs;
  }

  static async start(count, source, options, silenceMs = WORKER_SILENCE_MS, s3 = null) {
    const module = await compiledModule(source);
    const pool = new WorkerPool(silenceMs);
    pool.#signRead = s3?.signRead;
    for (let i = 0; i < count; i++) {
      const worker = new Worker(besideUs('./worker.js'), { type: 'module', name: `medallion-${i}` });
      worker.onmessage = ({ data }) => pool.#answer(i, data);
      worker.onerror = (e) => pool.#fail(`worker ${i} failed: ${e.message || 'its script could not be loaded'}`);
      pool.#workers.push(worker);
      pool.#latest.push({});
      pool.#baseline.push({});
      pool.#heard.push(0);
    }
    try {
      await Promise.all(pool.#workers.map((_, i) => pool.#call(i, 'start', { module, options, s3: s3?.address })));
    } catch (e) {
      pool.close();
      throw e;
    }
    return pool;
  }

  get size() {
    return this.broken ? 0 : this.#workers.length;
  }

  #call(i, call, args) {
    if (this.broken) return Promise.reject(new MedallionError(this.broken));
    return new Promise((resolve, reject) => {
      const id = ++this.#next;
      // Silence counts from the first call a worker has to answer, not from each one queued.
      if (!this.#busy().has(i)) this.#heard[i] = Date.now();
      this.#pending.set(id, { resolve, reject, worker: i });
      this.#workers[i].postMessage({ id, call, args });
      this.#watch ??= setInterval(() => this.#check(), Math.min(PING_MS, this.#silenceMs / 3));
    });
  }

  #busy() {
    return new Set([...this.#pending.values()].map((p) => p.worker));
  }

  // A worker the browser stopped without an error event (out of memory, say) would leave its
  // part pending for ever: a worker owing an answer is pinged, and answers between its reads;
  // one silent for the whole allowance ends the pool, and the query runs whole on the page.
  #check() {
    const busy = this.#busy();
    if (!busy.size) {
      clearInterval(this.#watch);
      this.#watch = null;
      return;
    }
    for (const i of busy) {
      const silent = Date.now() - this.#heard[i];
      if (silent > this.#silenceMs) {
        this.#fail(`worker ${i} sent nothing for ${(silent / 1000).toFixed(1)} s while it owed an answer (workerSilenceMs: ${this.#silenceMs})`);
        return;
      }
      this.#workers[i].postMessage({ ping: true });
    }
  }

  #answer(i, data) {
    this.#heard[i] = Date.now();
    if (data.pong) return;
    if (data.sign !== undefined) {
      this.#sign(i, data);
      return;
    }
    if (data.trapped !== undefined) {
      this.#fail(`worker ${i}'s WebAssembly module stopped (${data.trapped})`);
      return;
    }
    if (data.stats) this.#latest[i] = data.stats;
    const pending = this.#pending.get(data.id);
    if (!pending) return;
    this.#pending.delete(data.id);
    if (data.error !== undefined) pending.reject(new MedallionError(data.error));
    else pending.resolve(data.value);
  }

  // A worker's read of an s3:// table, signed here: keys and the `sign` callback stay on the page.
  async #sign(i, { sign, request }) {
    let answer;
    try {
      answer = { signed: sign, value: await this.#signRead(request) };
    } catch (e) {
      answer = { signed: sign, error: String(e?.message ?? e) };
    }
    if (!this.broken) this.#workers[i].postMessage(answer);
  }

  /** Whether the workers read s3:// tables (the page has the s3 option). */
  get readsS3() {
    return this.#signRead !== undefined;
  }

  #fail(message, closing = false) {
    if (this.broken) return;
    this.broken = message;
    // Queries still answer, whole on the page: say once why they stopped using the workers.
    if (!closing) console.warn(`Medallion: ${message}; queries run whole on the page from now on`);
    for (const p of this.#pending.values()) p.reject(new MedallionError(message));
    this.#pending.clear();
    clearInterval(this.#watch);
    this.#watch = null;
    for (const w of this.#workers) w.terminate();
  }

  /**
   * Registers a table in every worker before the next query split across them (until then a
   * worker reads nothing: queries that do not split cost no footer read per worker).
   */
  register(name, location, kind, version, timestamp) {
    this.#unsent.set(name, { name, location, kind, version, timestamp });
  }

  // In order, and before any part that needs them: a worker handles messages concurrently.
  #sendTables() {
    if (this.#unsent.size) {
      const tables = [...this.#unsent.values()];
      this.#unsent.clear();
      this.#registering = this.#registering
        .then(() => Promise.all(tables.flatMap((t) => this.#workers.map((_, i) => this.#call(i, 'register', t)))))
        .catch((e) => this.#fail(`a worker could not register a table (${e.message ?? e})`));
    }
    return this.#registering;
  }

  /** `runParts(fingerprint)` for Engine.sqlInParts: part i runs in worker i. */
  runParts(sql) {
    const parts = this.#workers.length;
    return async () => {
      await this.#sendTables();
      return Promise.all(this.#workers.map((_, part) => this.#call(part, 'part', { sql, parts, part })));
    };
  }

  /** What the workers' calls cost since the last resetStats(), to add to the page's. */
  stats() {
    const sum = Object.fromEntries(COUNTED.map((k) => [k, 0]));
    sum.cachedBytes = 0;
    this.#latest.forEach((s, i) => {
      for (const k of COUNTED) sum[k] += (s[k] ?? 0) - (this.#baseline[i][k] ?? 0);
      sum.cachedBytes += s.cachedBytes ?? 0;
    });
    return sum;
  }

  resetStats() {
    this.#baseline = this.#latest.map((s) => ({ ...s }));
  }

  close() {
    this.#fail('the engine was closed', true);
  }
}

// One WebAssembly instance and the wasm-bindgen glue module that owns it. The glue keeps its
// instance in module state, so a fresh instance needs a fresh copy of the glue module.
async function instantiate(wasm) {
  generation += 1;
  let glue;
  if (!glueInUse) {
    glue = firstGlue;
    glueInUse = true;
  } else {
    try {
      glue = await import(`${besideUs('../pkg/medallion_wasm.js').href}?instance=${generation}`);
    } catch (e) {
      throw new MedallionError(
        'the WebAssembly module trapped earlier and this runtime cannot load a second copy of it; restart the worker or process',
        { cause: e },
      );
    }
  }
  let source = wasm;
  try {
    source ??= await defaultWasmSource();
    await glue.default({ module_or_path: source });
  } catch (e) {
    const from = source instanceof URL ? ` from ${source.href}` : '';
    throw new MedallionError(
      `could not load Medallion's WebAssembly module${from}: ${e.message ?? e} (in edge workers, import the .wasm and pass it: Medallion.create({ wasm }))`,
      { cause: e },
    );
  }
  const instance = { glue, pending: new Set(), trapped: null };
  glue.onTrap((message) => {
    instance.trapped = message;
    const error = trapError(message);
    for (const p of instance.pending) p.reject(error);
    instance.pending.clear();
  });
  return instance;
}

// The instance every engine shares (compiling the module is the slow part of start-up); replaced
// only after a trap.
let live = null;
let starting = null;
async function currentInstance(wasm) {
  if (live && !live.trapped) return live;
  if (!starting) {
    starting = instantiate(wasm)
      .then((instance) => {
        live = instance;
        return instance;
      })
      .finally(() => {
        starting = null;
      });
  }
  return starting;
}

function trapError(message) {
  return new MedallionError(
    `Medallion's WebAssembly module stopped (${message}); the call was abandoned and the next call starts a fresh instance`,
    { trapped: true },
  );
}

/** A query result. */
export class Result {
  #inner;
  constructor(inner) {
    this.#inner = inner;
  }
  /** Number of rows. */
  get numRows() {
    return this.#inner.numRows;
  }
  /** How many parts the query's scans ran in (Web Workers, see the `workers` option); 1 when it ran whole. */
  get parts() {
    return this.#inner.parts;
  }
  /** Column names, in order. */
  get columns() {
    return this.#inner.columns;
  }
  /**
   * Rows as plain objects. Values are JSON values: 64-bit integers beyond 2^53 lose precision
   * (use toIPC for exact values), timestamps are ISO strings, decimals are numbers.
   */
  toArray() {
    return JSON.parse(this.#inner.toJSONText());
  }
  /** The result as Arrow IPC stream bytes (apache-arrow's `tableFromIPC` reads them). */
  toIPC() {
    return this.#inner.toIPC();
  }
}

export class Medallion {
  #options;
  #wasm;
  #s3Fetch;
  #instance = null;
  #engine = null;
  #registered = new Map();
  #starting = null;
  #pool = null;

  constructor(options, wasm, s3Fetch) {
    this.#options = options;
    this.#wasm = wasm;
    this.#s3Fetch = s3Fetch;
  }

  /**
   * Loads the module and makes an engine. Options (all optional): `wasm` (a
   * WebAssembly.Module, bytes or URL of medallion_wasm_bg.wasm — needed in edge workers),
   * `footerHint`, `coalesceGap`, `maxInFlight`, `prefetchRowGroups`, `batchSize`,
   * `timeoutMs`, `retries`, `maxFullBody`, `cacheBytes` (memory for byte ranges reused by
   * later calls while their file is unchanged; 0 = none), `memoryLimit` (bytes sorts, joins
   * and aggregates may hold; over it a query fails naming its table), `pushdownFilters` (read a filter's
   * columns first; unset: for point lookups only), and `s3` for `s3://bucket/key` locations:
   * `{ region, endpoint?, pathStyle?, singleWriter? }` with one way to sign —
   * `accessKeyId`, `secretAccessKey`, `sessionToken?` (Node, edge workers), `sign`
   * (browser pages: `async ({ method, url, headers }) => ({ url, headers })`, done by your
   * server), or `anonymous: true` (public buckets).
   */
  static async create(options = {}) {
    const { wasm, s3, workers, workerSilenceMs = WORKER_SILENCE_MS, ...engineOptions } = options;
    const wanted = workers === 'auto' ? Math.min(globalThis.navigator?.hardwareConcurrency ?? 1, 8) : (workers ?? 0);
    if (!Number.isInteger(wanted) || wanted < 0) {
      throw new MedallionError(`Medallion.create options: workers must be a whole number ≥ 0 or "auto", not ${JSON.stringify(workers)}`);
    }
    if (!(typeof workerSilenceMs === 'number' && workerSilenceMs > 0)) {
      throw new MedallionError(`Medallion.create options: workerSilenceMs must be a number of milliseconds > 0, not ${JSON.stringify(workerSilenceMs)}`);
    }
    // A Cloudflare Workers isolate has 128 MB for everything; the engine's default would not fit.
    if (engineOptions.cacheBytes === undefined && globalThis.navigator?.userAgent === 'Cloudflare-Workers') {
      engineOptions.cacheBytes = WORKERS_CACHE_BYTES;
    }
    let send;
    if (s3 !== undefined) {
      send = await s3Fetch(s3);
      engineOptions.s3 = Object.fromEntries(S3_ADDRESS.filter((k) => s3[k] !== undefined).map((k) => [k, s3[k]]));
    }
    const m = new Medallion(engineOptions, wasm, send);
    await m.#ensure();
    if (wanted > 1 && canStartWorkers) {
      // The workers' engines get the bucket's address; they ask the page to sign each read.
      const { s3: address, ...workerOptions } = engineOptions;
      const bucket = send ? { address, signRead: send.signRead } : null;
      m.#pool = await WorkerPool.start(wanted, wasm ?? (await defaultWasmSource()), workerOptions, workerSilenceMs, bucket);
    }
    return m;
  }

  async #ensure() {
    if (this.#instance && !this.#instance.trapped) return this.#instance;
    if (!this.#starting) {
      this.#starting = (async () => {
        const instance = await currentInstance(this.#wasm);
        let engine;
        try {
          engine = new instance.glue.Engine(this.#options, this.#s3Fetch);
        } catch (e) {
          throw toError(e);
        }
        for (const [name, { location, kind, version, timestamp }] of this.#registered) {
          const found = await this.#guard(instance, () => engine.register(name, location, kind, version, timestamp));
          // A Delta table read at its latest version may have moved on: the workers follow.
          this.#mirror(name, location, kind, version, timestamp, found);
        }
        this.#instance = instance;
        this.#engine = engine;
        return instance;
      })().finally(() => {
        this.#starting = null;
      });
    }
    return this.#starting;
  }

  // Runs one call on an instance; if the instance traps meanwhile, rejects instead of hanging.
  #guard(instance, call) {
    return new Promise((resolve, reject) => {
      const entry = { reject };
      instance.pending.add(entry);
      const done = () => instance.pending.delete(entry);
      let promise;
      try {
        promise = Promise.resolve(call());
      } catch (e) {
        done();
        reject(instance.trapped ? trapError(instance.trapped) : toError(e));
        return;
      }
      promise.then(
        (v) => {
          done();
          resolve(v);
        },
        (e) => {
          done();
          reject(instance.trapped ? trapError(instance.trapped) : toError(e));
        },
      );
    });
  }

  async #call(f) {
    const instance = await this.#ensure();
    return this.#guard(instance, () => f(this.#engine, instance));
  }

  /** Registers a Parquet file (URL or s3:// location) as table `name`. */
  async registerParquet(name, url) {
    return this.#register(name, url, 'parquet');
  }

  /**
   * Registers a Delta table (URL or s3:// location of its folder) as table `name`; `{ version }` or
   * `{ timestamp }` (RFC 3339) reads it as it was then (time travel).
   */
  async registerDelta(name, url, at = {}) {
    return this.#register(name, url, 'delta', at);
  }

  /** Registers a Parquet file or a Delta table, whichever `url` holds; `at` as for registerDelta. */
  async register(name, url, at = {}) {
    return this.#register(name, url, 'auto', at);
  }

  async #register(name, location, kind, at = {}) {
    const unknown = Object.keys(at ?? {}).filter((k) => k !== 'version' && k !== 'timestamp');
    if (unknown.length) {
      throw new MedallionError(`table \`${name}\`: unknown option \`${unknown[0]}\`, expected version or timestamp`);
    }
    const { version, timestamp } = at ?? {};
    const found = await this.#call((e) => e.register(name, location, kind, version, timestamp));
    this.#registered.set(name, { location, kind, version, timestamp });
    this.#mirror(name, location, kind, version, timestamp, found);
    return found.kind;
  }

  // The workers hold the page's tables they can read: HTTP(S), and s3:// when the page signs.
  #mirror(name, location, kind, version, timestamp, found) {
    if (!this.#pool?.size) return;
    if (!(/^https?:\/\//i.test(location) || (this.#pool.readsS3 && /^s3:\/\//i.test(location)))) return;
    // The workers read the Delta version the page read, even if the table has moved on
    // since: else their plans would differ from the page's, and every query would run whole.
    if (found.version !== null) this.#pool.register(name, location, found.kind, found.version, undefined);
    else this.#pool.register(name, location, kind, version, timestamp);
  }

  /**
   * Runs SQL over the registered tables; with the `workers` option, a query over HTTP(S)
   * tables large enough to split has its scans run in the workers.
   */
  async sql(query) {
    const pool = this.#pool;
    if (!pool?.size) return new Result(await this.#call((e) => e.sql(query)));
    try {
      return new Result(await this.#call((e) => e.sqlInParts(query, pool.size, pool.runParts(query))));
    } catch (e) {
      // The pool ended under this query (a worker trapped): it runs whole on the page.
      if (!pool.broken) throw e;
      return new Result(await this.#call((engine) => engine.sql(query)));
    }
  }

  /** How many Web Workers run the parts of queries (0 without the `workers` option, or after one failed). */
  get workers() {
    return this.#pool?.size ?? 0;
  }

  /**
   * Runs a pipeline spec (TOML) whose sources are URLs or s3:// locations. Tables are written
   * to `options.lake`: a path in an in-memory lake (default "/lake"), or `s3://bucket/prefix`
   * (with the `s3` option of create); they are registered by name for `sql`, quarantines as
   * `<name>_quarantine`. Options: `base` (URL or s3:// folder that relative source paths start
   * from), `files` (source URLs that the spec's globs may match — plain HTTP cannot list; a
   * bucket can), `runId`, `nowMs`, `onProgress(event)`. Resolves to the run report.
   */
  async runPipeline(spec, options = {}) {
    const { onProgress, ...rest } = options;
    return this.#call((e) => e.runPipeline(spec, rest, onProgress));
  }

  /** The engine's version. */
  get version() {
    return this.#instance.glue.version();
  }

  /** Requests, bytes fetched and written (HTTP, S3, in memory) since creation or `resetStats()`. */
  stats() {
    const own = this.#engine.stats();
    if (!this.#pool) return own;
    const theirs = this.#pool.stats();
    for (const k of [...COUNTED, 'cachedBytes']) own[k] += theirs[k];
    return own;
  }

  resetStats() {
    this.#engine.resetStats();
    this.#pool?.resetStats();
  }

  /** The in-memory lake's files: `[path, Uint8Array][]` (Delta logs and Parquet data); a lake in a bucket is not copied here. */
  lakeFiles() {
    return this.#engine.lakeFiles();
  }

  /** Frees the engine's memory now rather than when it is garbage-collected. */
  close() {
    this.#pool?.close();
    this.#pool = null;
    this.#engine?.free();
    this.#engine = null;
    this.#instance = null;
    this.#registered.clear();
  }

  /** For tests: makes the module panic (at once, or inside a future). */
  async _panicForTests(inFuture = false) {
    return this.#call((_, instance) => instance.glue.__panicForTests(inFuture));
  }
}

function toError(e) {
  if (e instanceof MedallionError) return e;
  if (!(e instanceof Error)) return new MedallionError(String(e));
  const m = new MedallionError(e.message, { cause: e });
  // What a failed run committed before failing (see runPipeline in index.d.ts).
  for (const key of ['committed', 'notCommitted', 'changedNothing']) {
    if (key in e) m[key] = e[key];
  }
  return m;
}

export default Medallion;
