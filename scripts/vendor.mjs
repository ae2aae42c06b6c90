#!/usr/bin/env node
/**
 * Vendor the browser dependencies into static/vendor/ so that no page ever
 * loads code from a CDN.
 *
 * Usage (from the repository root):
 *
 *     npm ci --ignore-scripts && node scripts/vendor.mjs [--force]
 *
 * `--ignore-scripts` is required: @huggingface/transformers depends on
 * onnxruntime-node, whose postinstall downloads native binaries from the
 * internet. The browser never needs them.
 *
 * What it does:
 *   1. Checks that node_modules holds exactly the versions pinned in
 *      package.json / package-lock.json (and that onnxruntime-web is the exact
 *      version @huggingface/transformers depends on).
 *   2. Copies the few files the page needs (see SPEC below) into versioned
 *      folders `static/vendor/<package>@<version>/`, so their URLs can be
 *      cached as immutable.
 *   3. Writes precompressed siblings `<file>.br` (brotli, quality 11, 16 MiB
 *      window) and `<file>.gz` (gzip level 9) for every file of at least
 *      1 KiB (see GZIP_SKIP_EXTS for the size budget).
 *   4. Writes static/vendor/manifest.json (versions, sha256 + size of every
 *      file, entry points) which the server reads to build URLs and serve
 *      the files, and a .gitattributes marking everything there binary.
 *   5. Deletes everything else under static/vendor/ (older versions, files no
 *      longer vendored): the folder is owned by this script.
 *
 * The output is deterministic: rerunning it on the same node_modules yields
 * the same bytes. Brotli at quality 11 is slow on the ~41 MB of wasm, so
 * compressed files whose raw sha256 and compression settings match the
 * existing manifest are reused; pass --force to recompress everything.
 *
 * Only node built-ins are used. See docs/vendoring.md.
 */

import { createHash } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  rmSync,
  rmdirSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import zlib from 'node:zlib';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const NODE_MODULES = join(ROOT, 'node_modules');
const VENDOR_DIR = join(ROOT, 'static', 'vendor');
const MANIFEST = join(VENDOR_DIR, 'manifest.json');
const GITATTRIBUTES = join(VENDOR_DIR, '.gitattributes');
const FORCE = process.argv.includes('--force');

/** Files below this size are not worth a compressed sibling. */
const MIN_COMPRESS_BYTES = 1024;
/**
 * Extensions that get no .gz sibling. Empty: raw + .br + .gz of everything is
 * ~59 MB, under the ~70 MB budget, and gzip is what browsers advertise over
 * plain http (brotli is https-only in some browsers). If a future ORT makes
 * the total exceed the budget, put '.wasm' here: every browser that can run
 * ORT's threaded wasm or WebGPU accepts brotli over https and on localhost.
 */
const GZIP_SKIP_EXTS = new Set([]);
const BROTLI_LGWIN = 24; // 16 MiB window: noticeably smaller wasm, all browsers decode it
const COMPRESSION = {
  br: `brotli quality=11 lgwin=${BROTLI_LGWIN}`,
  gz: 'gzip level=9 memLevel=9',
};

/**
 * What to vendor: [source relative to the package root, destination name in
 * static/vendor/<package>@<version>/]. `entries` name the files the app uses.
 */
const SPEC = [
  {
    name: 'htmx.org',
    files: [
      // Classic (IIFE) build: a plain <script src> defines window.htmx.
      ['dist/htmx.min.js', 'htmx.min.js'],
      ['LICENSE', 'LICENSE'],
    ],
    entries: { htmx: 'htmx.min.js' },
  },
  {
    name: 'socket.io-client',
    files: [
      // Self-contained ESM build (engine.io-client etc. bundled in).
      ['dist/socket.io.esm.min.js', 'socket.io.esm.min.js'],
      ['LICENSE', 'LICENSE'],
    ],
    entries: { 'socket.io': 'socket.io.esm.min.js' },
  },
  {
    name: 'swagger-ui-dist',
    files: [
      // The API reference page (/schema/docs). The UMD bundle defines window.SwaggerUIBundle and
      // carries React and its other dependencies; the standalone preset (a top bar) is not used.
      ['swagger-ui-bundle.js', 'swagger-ui-bundle.js'],
      ['swagger-ui.css', 'swagger-ui.css'],
      ['LICENSE', 'LICENSE'],
      ['NOTICE', 'NOTICE'],
    ],
    entries: { swagger_ui_js: 'swagger-ui-bundle.js', swagger_ui_css: 'swagger-ui.css' },
  },
  {
    name: '@huggingface/transformers',
    files: [
      // Bundles onnxruntime-web's JS (ort.webgpu bundle); the transformers.web*
      // builds import 'onnxruntime-web' by bare name and would need an import map.
      ['dist/transformers.min.js', 'transformers.min.js'],
      ['LICENSE', 'LICENSE'],
    ],
    entries: { transformers: 'transformers.min.js' },
  },
  {
    name: 'onnxruntime-web',
    files: [
      // What transformers requests by default (WebGPU EP + wasm EP).
      ['dist/ort-wasm-simd-threaded.asyncify.mjs', 'ort-wasm-simd-threaded.asyncify.mjs'],
      ['dist/ort-wasm-simd-threaded.asyncify.wasm', 'ort-wasm-simd-threaded.asyncify.wasm'],
      // WASM-only build: no WebGPU EP, about half the download.
      ['dist/ort-wasm-simd-threaded.mjs', 'ort-wasm-simd-threaded.mjs'],
      ['dist/ort-wasm-simd-threaded.wasm', 'ort-wasm-simd-threaded.wasm'],
      // onnxruntime-web ships no LICENSE file (MIT per its package.json).
    ],
    entries: {
      ort_wasm_dir: '',
      ort_webgpu_mjs: 'ort-wasm-simd-threaded.asyncify.mjs',
      ort_webgpu_wasm: 'ort-wasm-simd-threaded.asyncify.wasm',
      ort_wasm_mjs: 'ort-wasm-simd-threaded.mjs',
      ort_wasm_wasm: 'ort-wasm-simd-threaded.wasm',
    },
  },
];

const brotli = promisify(zlib.brotliCompress);
const gzip = promisify(zlib.gzip);

function fail(message) {
  console.error(`vendor.mjs: ${message}`);
  process.exit(1);
}

function readJson(path) {
  return JSON.parse(readFileSync(path, 'utf8'));
}

function sha256(buf) {
  return createHash('sha256').update(buf).digest('hex');
}

/** Forward slashes in manifest keys and URLs, whatever the OS. */
function posix(p) {
  return p.split(sep).join('/');
}

function extname(name) {
  const dot = name.lastIndexOf('.');
  return dot > name.lastIndexOf('/') ? name.slice(dot) : '';
}

function checkPins() {
  const pkg = readJson(join(ROOT, 'package.json'));
  const lockPath = join(ROOT, 'package-lock.json');
  if (!existsSync(lockPath)) fail('package-lock.json is missing; run `npm install --ignore-scripts`.');
  const lock = readJson(lockPath);
  const pins = pkg.devDependencies ?? {};
  const versions = {};
  for (const { name } of SPEC) {
    const pin = pins[name];
    if (!pin || !/^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$/.test(pin)) {
      fail(`package.json must pin ${name} to an exact version (found ${JSON.stringify(pin)}).`);
    }
    const locked = lock.packages?.[`node_modules/${name}`]?.version;
    if (locked !== pin) fail(`package-lock.json has ${name}@${locked}, package.json pins ${pin}.`);
    const manifestPath = join(NODE_MODULES, name, 'package.json');
    if (!existsSync(manifestPath)) fail(`node_modules/${name} is missing; run \`npm ci --ignore-scripts\`.`);
    const installed = readJson(manifestPath).version;
    if (installed !== pin) {
      fail(`node_modules has ${name}@${installed}, package.json pins ${pin}; run \`npm ci --ignore-scripts\`.`);
    }
    versions[name] = pin;
  }
  // transformers.min.js bundles ORT's JS; the .mjs/.wasm pair must come from the same ORT build.
  const ortWanted = readJson(join(NODE_MODULES, '@huggingface/transformers/package.json')).dependencies[
    'onnxruntime-web'
  ];
  if (ortWanted !== versions['onnxruntime-web']) {
    fail(`@huggingface/transformers needs onnxruntime-web ${ortWanted}, package.json pins ${versions['onnxruntime-web']}.`);
  }
  return versions;
}

/** Guard against a transformers upgrade silently switching ORT runtime files. */
function checkTransformersRuntime(versions) {
  const src = readFileSync(join(NODE_MODULES, '@huggingface/transformers/dist/transformers.min.js'), 'utf8');
  const ortVersion = versions['onnxruntime-web'];
  if (!src.includes(`"${ortVersion}"`)) {
    fail(`transformers.min.js does not embed onnxruntime-web ${ortVersion}; check the bundled ORT version.`);
  }
  if (!src.includes('"ort-wasm-simd-threaded.asyncify.mjs"') || !src.includes('".asyncify"')) {
    fail('transformers.min.js no longer requests ort-wasm-simd-threaded.asyncify.*; update SPEC and docs/vendoring.md.');
  }
}

async function compressVariants(raw, ext, rawSha, oldFiles, oldCompression, destRel) {
  const out = [];
  if (raw.length < MIN_COMPRESS_BYTES) return out;
  const jobs = [
    ['.br', 'br', () =>
      brotli(raw, {
        params: {
          [zlib.constants.BROTLI_PARAM_QUALITY]: zlib.constants.BROTLI_MAX_QUALITY,
          [zlib.constants.BROTLI_PARAM_LGWIN]: BROTLI_LGWIN,
          [zlib.constants.BROTLI_PARAM_SIZE_HINT]: raw.length,
        },
      })],
  ];
  if (!GZIP_SKIP_EXTS.has(ext)) {
    jobs.push(['.gz', 'gz', () => gzip(raw, { level: 9, memLevel: 9 })]);
  }
  for (const [suffix, kind, compress] of jobs) {
    const rel = destRel + suffix;
    const abs = join(VENDOR_DIR, rel);
    let data = null;
    // Reuse a previous result only if it came from the same raw bytes and settings.
    if (
      !FORCE &&
      oldFiles?.[destRel]?.sha256 === rawSha &&
      oldFiles?.[rel] &&
      oldCompression?.[kind] === COMPRESSION[kind] &&
      existsSync(abs)
    ) {
      const existing = readFileSync(abs);
      if (sha256(existing) === oldFiles[rel].sha256) data = existing;
    }
    if (data === null) {
      const t0 = Date.now();
      data = await compress();
      if (raw.length > 1e6) console.log(`  ${rel}: ${Date.now() - t0} ms`);
    }
    if (data.length >= raw.length) continue; // no point serving a bigger "compressed" file
    out.push([rel, data]);
  }
  return out;
}

function writeIfChanged(abs, data) {
  if (existsSync(abs)) {
    const old = readFileSync(abs);
    if (old.equals(data)) return;
  }
  mkdirSync(dirname(abs), { recursive: true });
  writeFileSync(abs, data);
}

function walk(dir) {
  if (!existsSync(dir)) return [];
  const out = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const abs = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...walk(abs));
    else out.push(abs);
  }
  return out;
}

function removeEmptyDirs(dir) {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (entry.isDirectory()) removeEmptyDirs(join(dir, entry.name));
  }
  if (dir !== VENDOR_DIR && readdirSync(dir).length === 0) rmdirSync(dir);
}

async function main() {
  const versions = checkPins();
  checkTransformersRuntime(versions);

  let old = null;
  if (existsSync(MANIFEST)) {
    try {
      old = readJson(MANIFEST);
    } catch {
      old = null;
    }
  }

  const files = new Map(); // rel -> Buffer
  const sources = {};
  const entries = {};
  const rawFiles = [];
  for (const { name, files: list, entries: ent } of SPEC) {
    const folder = `${name}@${versions[name]}`;
    for (const [src, dest] of list) {
      const srcAbs = join(NODE_MODULES, name, src);
      if (!existsSync(srcAbs)) fail(`${name} ${versions[name]} does not ship ${src}.`);
      const rel = `${folder}/${dest}`;
      const data = readFileSync(srcAbs);
      files.set(rel, data);
      sources[rel] = `node_modules/${name}/${src}`;
      rawFiles.push(rel);
    }
    for (const [key, dest] of Object.entries(ent)) entries[key] = `${folder}/${dest}`;
  }

  // Two at a time: brotli-11 is single-threaded and the big wasm files dominate.
  const queue = [...rawFiles].sort((a, b) => files.get(b).length - files.get(a).length);
  const workers = Array.from({ length: 2 }, async () => {
    for (let rel = queue.shift(); rel !== undefined; rel = queue.shift()) {
      const raw = files.get(rel);
      const variants = await compressVariants(
        raw,
        extname(rel),
        sha256(raw),
        old?.files,
        old?.compression,
        rel,
      );
      for (const [vrel, data] of variants) files.set(vrel, data);
    }
  });
  await Promise.all(workers);

  const sortedKeys = [...files.keys()].sort();
  const manifestFiles = {};
  for (const rel of sortedKeys) {
    const data = files.get(rel);
    writeIfChanged(join(VENDOR_DIR, rel), data);
    manifestFiles[rel] = { sha256: sha256(data), bytes: data.length };
  }

  const sortObject = (o) => Object.fromEntries(Object.entries(o).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  const manifest = {
    generated_by: 'scripts/vendor.mjs',
    packages: sortObject(versions),
    entries: sortObject(entries),
    compression: COMPRESSION,
    sources: sortObject(sources),
    files: manifestFiles,
  };
  writeIfChanged(MANIFEST, Buffer.from(JSON.stringify(manifest, null, 2) + '\n'));
  // Minified and compressed files: no eol conversion (.br can look like text), no useless diffs.
  writeIfChanged(GITATTRIBUTES, Buffer.from('* binary\n'));

  // static/vendor/ is owned by this script: drop older versions and leftovers.
  const keep = new Set([...sortedKeys.map((k) => join(VENDOR_DIR, k)), MANIFEST, GITATTRIBUTES]);
  let removed = 0;
  for (const abs of walk(VENDOR_DIR)) {
    if (!keep.has(abs)) {
      rmSync(abs);
      removed += 1;
      console.log(`removed stale ${posix(relative(ROOT, abs))}`);
    }
  }
  removeEmptyDirs(VENDOR_DIR);

  let total = 0;
  for (const rel of sortedKeys) total += manifestFiles[rel].bytes;
  for (const rel of rawFiles) {
    const size = (k) => (manifestFiles[k] ? String(manifestFiles[k].bytes) : '-');
    console.log(`${rel.padEnd(62)} raw ${size(rel).padStart(9)}  br ${size(rel + '.br').padStart(9)}  gz ${size(rel + '.gz').padStart(9)}`);
  }
  console.log(
    `${sortedKeys.length} files, ${(total / 1e6).toFixed(1)} MB in static/vendor/ (${removed} stale removed); manifest: ${posix(relative(ROOT, MANIFEST))}`,
  );
}

await main();
