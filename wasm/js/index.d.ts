// Types of the Medallion JavaScript API (wasm/js/index.js).

export interface CreateOptions {
  /** medallion_wasm_bg.wasm as a compiled module, bytes or URL. Needed in edge workers. */
  wasm?: WebAssembly.Module | BufferSource | URL | string;
  /**
   * Bytes of the first Parquet footer read, from the end of the file (default 64 KiB); a larger
   * footer costs one more request, of exactly the missing bytes.
   */
  footerHint?: number;
  /** Byte ranges closer than this are fetched as one request (default 16 KiB). */
  coalesceGap?: number;
  /** Requests in flight at once per file (default 6). */
  maxInFlight?: number;
  /** Row groups fetched ahead once a scan reads them in sequence (default 8). */
  prefetchRowGroups?: number;
  /** Rows per Arrow batch (default 8192). */
  batchSize?: number;
  /** Longest time one HTTP request may take, in ms (default 30000; 0 = none). */
  timeoutMs?: number;
  /** Retries for 5xx answers and network errors (default 3). */
  retries?: number;
  /** Largest whole body accepted from a server that ignores Range (default 64 MiB). */
  maxFullBody?: number;
  /**
   * Bytes of fetched ranges kept in memory for later calls (default 256 MiB; 32 MiB in
   * Cloudflare Workers, whose isolates have 128 MB; 0 = no cache). A cached range is served
   * only after the file is confirmed unchanged during the same call (its ETag, or
   * Last-Modified and size, from the call's first request for it, or one HEAD), or while
   * the server's `Cache-Control: max-age` (less `Age`) says it is fresh: then with no request.
   */
  cacheBytes?: number;
  /**
   * Bytes that sorts, joins and aggregates of one call may hold at once (default: no limit).
   * There is no disk to spill to in wasm, so a query that needs more fails with an error
   * naming its table and the limit instead of exhausting the tab's or isolate's memory.
   */
  memoryLimit?: number;
  /**
   * Late materialisation: a filter's columns are fetched and decoded first, the others only
   * where rows pass. Unset, the engine decides per scan: on for a filter with an equality
   * (`col = v`, `col IN (…)`) whose columns hold at most a quarter of the bytes the scan reads
   * (a point lookup then reads ~the filter column), off otherwise (a range filter that keeps
   * most rows would pay twice the requests). `true` / `false` force it on / off.
   */
  pushdownFilters?: boolean;
  /** Access to an S3(-compatible) bucket, for `s3://bucket/key` tables, sources and lakes. */
  s3?: S3Options;
  /**
   * Web Workers that run the scans of large queries (default 0: one engine, one core; "auto":
   * one per core, up to 8). Each worker holds its own instance of the module (memory and
   * start-up per worker) and the page's HTTP(S) tables, and reads its share of their byte
   * ranges (s3:// tables too: the page signs each of their reads); the page's engine plans
   * and finishes the query over their results. Queries over the in-memory lake, or tables the
   * workers do not hold (views, a lake runPipeline registered), and scans under 10 MiB run
   * whole on the page. Ignored where Web Workers cannot start (Node, edge workers).
   */
  workers?: number | 'auto';
  /**
   * How long a worker owing an answer may stay silent, in ms (default 60000). A worker answers
   * the pool's pings whenever its query waits on a read; one silent this long (stopped by the
   * browser without an error, say) ends the pool with a console warning, and queries, the one
   * under way included, run whole on the page.
   */
  workerSilenceMs?: number;
}

/** Where a bucket is, plus exactly one way to sign its requests. */
export type S3Options = S3Address & (S3Keys | S3Signer | S3Anonymous);

export interface S3Address {
  /** "us-east-1"; "auto" for R2. */
  region: string;
  /** An S3-compatible store (MinIO, R2, Ceph...), e.g. "http://127.0.0.1:9000"; default AWS S3. */
  endpoint?: string;
  /** endpoint/bucket/key rather than bucket.endpoint/key: default true with `endpoint`, false for AWS. */
  pathStyle?: boolean;
  /**
   * Only for a store that refuses conditional writes (HTTP 501): promise that no other process
   * writes to the lake at the same time, so a HEAD can stand in for `If-None-Match: *`.
   */
  singleWriter?: boolean;
}

/** SigV4 with keys (Node, edge workers: from the environment or secret bindings). Needs aws4fetch. */
export interface S3Keys {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

/** A request to sign: the method, the full URL and the headers that will be sent. */
export interface S3Request {
  method: string;
  url: string;
  headers: Record<string, string>;
}

/**
 * Browser pages, which must not hold secret keys: your server signs each request and returns a
 * presigned URL (headers unchanged) or signed headers.
 */
export interface S3Signer {
  sign(request: S3Request): Promise<{ url: string | URL; headers?: HeadersInit }>;
}

/** A public bucket: requests are not signed (reads only, unless the bucket allows writes). */
export interface S3Anonymous {
  anonymous: true;
}

export interface PipelineOptions {
  /** Where tables go: a path in the in-memory lake (default "/lake"), or "s3://bucket/prefix" (with the s3 option). */
  lake?: string;
  /** URL or s3:// folder that relative source paths in the spec start from. */
  base?: string;
  /** Source URLs that globs in the spec may match (plain HTTP cannot list; a bucket can). */
  files?: string[];
  runId?: string;
  /** Fixed "now" (ms since the epoch) for reproducible `_ingested_at` values. */
  nowMs?: number;
  onProgress?: (event: ProgressEvent) => void;
}

export type ProgressEvent =
  | { event: 'planned'; tables: string[] }
  | { event: 'tableStarted'; table: string; layer: 'bronze' | 'silver' | 'gold' }
  | { event: 'fileIngested'; table: string; file: string; bytes: number }
  | { event: 'tableFinished'; table: string; rows: number; skipped: boolean }
  | { event: 'committing'; tables: number };

export interface Stats {
  /** HTTP and S3 requests (and in-memory reads) made, HEADs that revalidate cached files included. */
  requests: number;
  /** Bytes fetched. */
  bytes: number;
  listRequests: number;
  writeRequests: number;
  bytesWritten: number;
  /** Reads answered from the range cache (not in `requests`). */
  cacheHits: number;
  /** Bytes those reads returned instead of fetching them (not in `bytes`). */
  bytesFromCache: number;
  /** HEADs sent to confirm that a cached file had not changed (in `requests`). */
  revalidations: number;
  /** Bytes the range cache holds now. */
  cachedBytes: number;
}

/** The run report, as `medallion run --json` prints it. */
export interface RunReport {
  pipeline: string;
  lake: string;
  run_id: string;
  ok: boolean;
  tables: Array<Record<string, unknown> & { table: string; layer: string; rows_out: number }>;
  stages: Array<{ stage: string; ms: number }>;
  io: Record<string, number>;
  elapsed_ms: number;
}

export class MedallionError extends Error {
  /** True if the WebAssembly module trapped; the next call runs on a fresh instance. */
  readonly trapped: boolean;
  /** A failed runPipeline: the tables committed before the failure, as [table, version]. */
  readonly committed?: Array<[string, number]>;
  /** A failed runPipeline: the tables whose new version was not committed. */
  readonly notCommitted?: string[];
  /** A failed runPipeline: true if no table changed. */
  readonly changedNothing?: boolean;
}

/** Which version of a Delta table to read: a version number, or the one current at a time. */
export interface TimeTravel {
  version?: number;
  /** RFC 3339, e.g. "2026-11-30T12:00:00Z". */
  timestamp?: string;
}

export class Result {
  readonly numRows: number;
  readonly columns: string[];
  /** How many parts the query's scans ran in (Web Workers, see `workers`); 1 when it ran whole. */
  readonly parts: number;
  /** Rows as plain objects (JSON values; use toIPC for exact 64-bit integers). */
  toArray(): Array<Record<string, unknown>>;
  /** Arrow IPC stream bytes, for apache-arrow's tableFromIPC. */
  toIPC(): Uint8Array;
}

export class Medallion {
  static create(options?: CreateOptions): Promise<Medallion>;
  readonly version: string;
  /** A Parquet file by URL or s3:// location. */
  registerParquet(name: string, url: string): Promise<'parquet'>;
  /** A Delta table (URL or s3:// folder); `{ version }` or `{ timestamp }` (RFC 3339) reads an earlier version. */
  registerDelta(name: string, url: string, at?: TimeTravel): Promise<'delta'>;
  /** A Parquet file or a Delta table, whichever the URL or s3:// location holds. */
  register(name: string, url: string, at?: TimeTravel): Promise<'parquet' | 'delta'>;
  sql(query: string): Promise<Result>;
  /** Web Workers running parts of queries: 0 without the `workers` option, or after one failed. */
  readonly workers: number;
  runPipeline(spec: string, options?: PipelineOptions): Promise<RunReport>;
  stats(): Stats;
  resetStats(): void;
  /** The in-memory lake's files (a lake in a bucket is not copied here). */
  lakeFiles(): Array<[string, Uint8Array]>;
  /** Frees the engine's memory now rather than at garbage collection. */
  close(): void;
}

export default Medallion;
