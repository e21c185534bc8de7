// A Web Worker that runs parts of queries for a Medallion engine on the page (the `workers`
// option of Medallion.create): its own instance of the module, the same HTTP(S) tables, and
// one message per call. Each answer carries the worker's requests and bytes so far, which the
// page's stats() adds to its own.
import * as glue from '../pkg/medallion_wasm.js';

let engine = null;

// A worker's reads bypass the browser's HTTP cache: the worker keeps its own range cache, and
// Chromium's cache, shared with the page and the other workers, answered a worker's footer
// read with 416 when they read one file at once (a server that allows caching, 3 workers).
const fetchAnyway = globalThis.fetch.bind(globalThis);
globalThis.fetch = (input, init = {}) => fetchAnyway(input, { ...init, cache: 'no-store' });

// Reads of s3:// tables: the page signs each one (it holds the keys or the `sign` callback),
// this worker fetches the bytes itself.
const signing = new Map();
let signRequests = 0;
function signOnPage(request) {
  return new Promise((resolve, reject) => {
    const id = ++signRequests;
    signing.set(id, { resolve, reject });
    postMessage({ sign: id, request });
  });
}
async function s3Send(url, init) {
  if (init.body !== undefined && init.body !== null) {
    throw new TypeError(`a worker only reads: ${init.method} ${url} has a body`);
  }
  const signed = await signOnPage({ method: init.method, url, headers: { ...init.headers } });
  return fetch(signed.url, { ...init, headers: signed.headers });
}

const calls = {
  async start({ module, options, s3 }) {
    await glue.default({ module_or_path: module });
    engine = s3 ? new glue.Engine({ ...options, s3 }, s3Send) : new glue.Engine(options, undefined);
    glue.onTrap((message) => postMessage({ trapped: message }));
  },
  async register({ name, location, kind, version, timestamp }) {
    return engine.register(name, location, kind, version, timestamp);
  },
  async part({ sql, parts, part }) {
    const answer = await engine.queryPart(sql, parts, part);
    return [answer, answer.bytes ? [answer.bytes.buffer] : []];
  },
};

self.onmessage = async ({ data }) => {
  // The pool's check that this worker is alive: answered whenever a query waits on a read.
  if (data.ping) return postMessage({ pong: true });
  if (data.signed !== undefined) {
    const waiting = signing.get(data.signed);
    signing.delete(data.signed);
    if (data.error !== undefined) waiting?.reject(new Error(data.error));
    else waiting?.resolve(data.value);
    return;
  }
  const { id, call, args } = data;
  try {
    const out = await calls[call](args);
    const [value, transfer] = Array.isArray(out) ? out : [out, []];
    postMessage({ id, value, stats: engine.stats() }, transfer);
  } catch (e) {
    postMessage({ id, error: String(e?.message ?? e), stats: engine?.stats() });
  }
};
