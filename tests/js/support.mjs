// Test support for the JavaScript runtimes: the demo data and its lake made by the native
// CLI, a real Range-capable HTTP server (tests/rangeserve.py) serving the repository, and the
// native CLI's answers that every runtime must match.
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
/** Generated data lives inside the repository so that one server root serves it and the package. */
export const WORK = path.join(REPO, 'tests/js/.work');

const targetDir = process.env.CARGO_TARGET_DIR || path.join(os.homedir(), '.cache/medallion/target');

/** The native CLI: $MEDALLION_BIN, else the debug build in the target dir. */
export function nativeBin() {
  const bin = process.env.MEDALLION_BIN || path.join(targetDir, 'debug/medallion');
  if (!fs.existsSync(bin)) {
    throw new Error(`no native medallion at ${bin}: run \`cargo build --bin medallion\` or set MEDALLION_BIN`);
  }
  return bin;
}

export function python() {
  const venv = process.env.MEDALLION_VENV || path.join(os.homedir(), '.cache/medallion/venv');
  const py = path.join(venv, 'bin/python');
  return fs.existsSync(py) ? py : 'python3';
}

/**
 * The retail demo's source files and the lake the native CLI builds from them (once per
 * process; scale 0.2, fixed seed, so every runtime sees the same bytes).
 */
export function demoFixture() {
  const dir = path.join(WORK, 'retail');
  const lake = path.join(WORK, 'lake');
  const stamp = path.join(WORK, 'fixture.ok');
  if (!fs.existsSync(stamp)) {
    fs.rmSync(WORK, { recursive: true, force: true });
    fs.mkdirSync(WORK, { recursive: true });
    execFileSync(nativeBin(), ['demo', '--dir', dir, '--lake', lake, '--scale', '0.2'], { stdio: 'pipe' });
    fs.writeFileSync(stamp, 'ok');
  }
  const files = [];
  const walk = (d) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else files.push(path.relative(REPO, p));
    }
  };
  walk(path.join(dir, 'data'));
  return { dir, lake, spec: fs.readFileSync(path.join(dir, 'pipeline.toml'), 'utf8'), sourceFiles: files.sort() };
}

/** Starts tests/rangeserve.py on a free port, serving the repository. */
export async function startServer({ latencyMs = 0, noStore = false, root = REPO } = {}) {
  const portFile = path.join(os.tmpdir(), `rangeserve-${process.pid}-${Date.now()}.port`);
  const args = [path.join(REPO, 'tests/rangeserve.py'), root, '--port', '0', '--port-file', portFile, '--latency-ms', String(latencyMs)];
  if (noStore) args.push('--no-store');
  const proc = spawn(python(), args, { stdio: ['ignore', 'ignore', 'inherit'] });
  for (let i = 0; i < 200 && !fs.existsSync(portFile); i++) await new Promise((r) => setTimeout(r, 50));
  if (!fs.existsSync(portFile)) {
    proc.kill();
    throw new Error('tests/rangeserve.py did not start');
  }
  await new Promise((r) => setTimeout(r, 50));
  const port = Number(fs.readFileSync(portFile, 'utf8').trim());
  fs.rmSync(portFile, { force: true });
  const base = `http://127.0.0.1:${port}`;
  return {
    base,
    port,
    async stats(reset = true) {
      return (await fetch(`${base}/__stats${reset ? '?reset=1' : ''}`)).json();
    },
    async fault(mode) {
      await fetch(`${base}/__fault?mode=${mode}`);
    },
    stop: () => new Promise((res) => {
      proc.once('exit', res);
      proc.kill();
    }),
  };
}

/** The native CLI's rows for a case (tables as [name, location, kind]). */
export function nativeRows(c) {
  const args = ['query', c.sql, '--format', 'json'];
  for (const [name, location, kind] of c.tables) {
    args.push('--table', `${name}=${kind === 'delta' ? 'delta:' : ''}${location}`);
  }
  const out = execFileSync(nativeBin(), args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  return JSON.parse(out.trim() || '[]');
}

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

/** Debian's Chromium with the flags this machine needs (no GPU, no background networking). */
export async function launchChromium() {
  if (!fs.existsSync(CHROMIUM)) throw new Error(`no browser at ${CHROMIUM}: apt-get install chromium (or set CHROMIUM)`);
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run', '--disable-quic'],
  });
}
