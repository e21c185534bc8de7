// Types of the Medallion JavaScript API (wasm/js/index.js).

export interface CreateOptions {
  /** medallion_wasm_bg.wasm as a compiled module, bytes or URL. Needed in edge workers. */
  wasm?: WebAssembly.Module | BufferSource | URL | string;
  /** Bytes of the first Parquet footer read, from the end of the file (default 512 KiB). */
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
}

export interface PipelineOptions {
  /** Where tables go in the in-memory lake (default "/lake"). */
  lake?: string;
  /** URL that relative source paths in the spec start from. */
  base?: string;
  /** Source URLs that globs in the spec may match (plain HTTP cannot list). */
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
  /** HTTP requests (and in-memory reads) made. */
  requests: number;
  /** Bytes fetched. */
  bytes: number;
  listRequests: number;
  writeRequests: number;
  bytesWritten: number;
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
  /** Rows as plain objects (JSON values; use toIPC for exact 64-bit integers). */
  toArray(): Array<Record<string, unknown>>;
  /** Arrow IPC stream bytes, for apache-arrow's tableFromIPC. */
  toIPC(): Uint8Array;
}

export class Medallion {
  static create(options?: CreateOptions): Promise<Medallion>;
  readonly version: string;
  registerParquet(name: string, url: string): Promise<'parquet'>;
  /** A Delta table; `{ version }` or `{ timestamp }` (RFC 3339) reads an earlier version. */
  registerDelta(name: string, url: string, at?: TimeTravel): Promise<'delta'>;
  /** A Parquet file or a Delta table, whichever the URL holds. */
  register(name: string, url: string, at?: TimeTravel): Promise<'parquet' | 'delta'>;
  sql(query: string): Promise<Result>;
  runPipeline(spec: string, options?: PipelineOptions): Promise<RunReport>;
  stats(): Stats;
  resetStats(): void;
  lakeFiles(): Array<[string, Uint8Array]>;
  /** Frees the engine's memory now rather than at garbage collection. */
  close(): void;
}

export default Medallion;
