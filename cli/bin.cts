#!/usr/bin/env node
/**
 * The `neftune` executable. Runs the CLI bundled into one CommonJS file (scripts/bundle.mjs) with
 * V8's code cache made at build time, which halves start-up time; without the bundle (a plain
 * `tsc` build) it loads the ES modules instead. A cache made by another Node version is rejected
 * by V8 and the bundle is compiled as usual. (A script run from the code cache cannot use import():
 * the bundle loads ONNX Runtime with require.)
 */
import fs = require('node:fs');
import path = require('node:path');
import vm = require('node:vm');
import Module = require('node:module');
import url = require('node:url');

const bundle = path.join(__dirname, 'neftune.cjs');
const cacheFile = `${bundle}.cache`;

function runBundle(source: string): void {
  let cachedData: Buffer | undefined;
  try { cachedData = fs.readFileSync(cacheFile); } catch { /* no cache: compile */ }
  // A shebang is only valid at the very start of a file; keep the line, as a comment.
  const body = source.startsWith('#!') ? `//${source.slice(2)}` : source;
  const script = new vm.Script(Module.wrap(body), { filename: bundle, ...(cachedData ? { cachedData } : {}) });
  const run = script.runInThisContext() as (exports: object, req: NodeJS.Require, module: object, filename: string, dirname: string) => void;
  const bundleModule = { exports: {} };
  run.call(bundleModule.exports, bundleModule.exports, Module.createRequire(bundle), bundleModule, bundle, __dirname);
  // The build writes the cache after a warm-up run, so it holds the functions a command compiles too.
  const target = process.env['NEFTUNE_WRITE_CODE_CACHE'];
  if (target) process.once('exit', () => fs.writeFileSync(target, script.createCachedData()));
}

let source: string | undefined;
try { source = fs.readFileSync(bundle, 'utf8'); } catch { /* not bundled */ }
if (source !== undefined) runBundle(source);
else void import(url.pathToFileURL(path.join(__dirname, 'main.js')).href);
