// Bundles the compiled CLI (dist/cli/main.js) into one CommonJS file, dist/cli/neftune.cjs, and
// writes V8's code cache for it after a warm-up run (dist/cli/neftune.cjs.cache); dist/cli/bin.cjs
// loads both. Why: on Node 20 loading ~60 ES modules and compiling them is most of a small command's
// time (bench/README.md). ONNX Runtime stays outside the bundle and is loaded only by `verify`.
import { build } from 'esbuild';
import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
// The bin runs directly when linked (npm link, npx); npm sets the same mode when it installs.
chmodSync(path.join(root, 'dist', 'cli', 'bin.cjs'), 0o755);
const outfile = path.join(root, 'dist', 'cli', 'neftune.cjs');
// yargs imports node:assert for two internal sanity checks; loading it (with its error formatting
// and colour support) costs about 3 ms of every start. These two functions do the same checks.
const assertShim = {
  name: 'assert-shim',
  setup(b) {
    b.onResolve({ filter: /^(node:)?assert$/ }, (args) => (args.importer.includes(`${path.sep}yargs${path.sep}`) ? { path: 'assert', namespace: 'assert-shim' } : undefined));
    b.onLoad({ filter: /.*/, namespace: 'assert-shim' }, () => ({
      contents: `const fail = (m, d) => { throw new Error(m ?? d); };
export const strictEqual = (a, b, m) => { if (!Object.is(a, b)) fail(m, 'Expected values to be strictly equal: ' + a + ' !== ' + b); };
export const notStrictEqual = (a, b, m) => { if (Object.is(a, b)) fail(m, 'Expected "actual" to be strictly unequal to: ' + b); };`,
      loader: 'js',
    }));
  },
};
const cache = `${outfile}.cache`;
rmSync(cache, { force: true });
// string-width makes an Intl.Segmenter (about 7 ms: ICU data) and four Unicode-property regular
// expressions (`\p{RGI_Emoji}` with the v flag alone is 5-10 ms to construct) when it loads, though
// yargs' help text, which is ASCII, takes its fast path and never uses them: make them on the first
// string off that path.
const lazyStringWidth = {
  name: 'lazy-string-width',
  setup(b) {
    b.onLoad({ filter: /[\\/]string-width[\\/]index\.js$/ }, async (args) => {
      const source = await readFile(args.path, 'utf8');
      const eager = /^const (\w+) = (new Intl\.Segmenter\(\)|\/.+\/[a-z]*);$/gm;
      const made = [...source.matchAll(eager)].map(([, name, value]) => `${name} ??= ${value};`);
      const fastPath = '\t\treturn string.length;\n\t}\n';
      // Another version: bundled as it is.
      if (made.length === 0 || source.split(fastPath).length !== 2 || !source.includes('segmenter.segment(')) return undefined;
      const contents = source.replace(eager, 'let $1;').replace(fastPath, `${fastPath}\n\t${made.join(' ')}\n`);
      return { contents, loader: 'js' };
    });
  },
};

// Every yargs instance starts by guessing its program's version: a package.json looked for with a
// directory listing of the working directory and each folder above it. cli/main.ts names the
// version itself, so the guess is dropped.
const noVersionGuess = {
  name: 'no-version-guess',
  setup(b) {
    b.onLoad({ filter: /[\\/]yargs[\\/]build[\\/]lib[\\/]yargs-factory\.js$/ }, async (args) => {
      const source = await readFile(args.path, 'utf8');
      const guess = '        yargs.help();\n        yargs.version();\n';
      if (source.split(guess).length !== 2) return undefined; // another version: bundled as it is
      return { contents: source.replace(guess, '        yargs.help();\n'), loader: 'js' };
    });
  },
};

// After running a command's handler yargs renders that command's whole help text and keeps it, for
// a failure that shows help; the CLI's failures never show it (cli/main.ts `.fail`), and help asked
// for is rendered when asked: every command would lay out text nobody reads.
const noHelpCache = {
  name: 'no-help-cache',
  setup(b) {
    b.onLoad({ filter: /[\\/]yargs[\\/]build[\\/]lib[\\/]command\.js$/ }, async (args) => {
      const source = await readFile(args.path, 'utf8');
      const cache = 'yargs.getInternalMethods().getUsageInstance().cacheHelpMessage();';
      if (source.split(cache).length !== 2) return undefined; // another version: bundled as it is
      return { contents: source.replace(cache, '/* help rendered when asked for */'), loader: 'js' };
    });
  },
};

await build({
  entryPoints: [path.join(root, 'dist', 'cli', 'main.js')],
  outfile,
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  external: ['onnxruntime-node', 'onnxruntime-web'],
  // The sources are ES modules; in the bundle import.meta.url is the bundle's own URL.
  define: { 'import.meta.url': '__bundleUrl' },
  banner: { js: "const __bundleUrl = require('node:url').pathToFileURL(__filename).href;" },
  logLevel: 'warning',
  plugins: [assertShim, lazyStringWidth, noVersionGuess, noHelpCache],
});
// One character past ASCII makes the whole 1.2 MB source a two-byte string: decoding it is several
// times slower at every start, and so is scanning it for a function the code cache lacks. esbuild
// escapes strings, regular expressions and names (charset ascii); what it leaves is in comments.
const bundled = readFileSync(outfile, 'utf8');
writeFileSync(outfile, bundled.replace(/[^\0-\x7f]/gu, (c) => `\\u{${c.codePointAt(0).toString(16)}}`));

// The browser app (web/): the page and its workers as ES modules, beside index.html, style.css and
// the bundled training data in dist/web/static, which `npm run web` (web/serve.ts) serves.
const webOut = path.join(root, 'dist', 'web', 'static');
rmSync(webOut, { recursive: true, force: true });
mkdirSync(webOut, { recursive: true });
await build({
  entryPoints: ['app', 'worker', 'train-worker'].map((name) => path.join(root, 'dist', 'web', `${name}.js`)),
  outdir: webOut,
  bundle: true,
  platform: 'browser',
  format: 'esm',
  target: 'es2022',
  sourcemap: true,
  logLevel: 'warning',
  // protobufjs probes for optional Node modules with eval; in the browser the probe just fails.
  logOverride: { 'direct-eval': 'silent' },
});
for (const file of ['index.html', 'style.css']) copyFileSync(path.join(root, 'web', file), path.join(webOut, file));
mkdirSync(path.join(webOut, 'data'));
copyFileSync(path.join(root, 'examples', 'data', 'tiny-tokens.jsonl'), path.join(webOut, 'data', 'tiny-tokens.jsonl'));

// Warm-up: patch a small model built with the library, so the cache covers what a command runs.
const { encodeModel } = await import(path.join(root, 'dist', 'src', 'index.js'));
const { buildTinyGpt } = await import(path.join(root, 'dist', 'examples', 'models.js'));
const dir = mkdtempSync(path.join(os.tmpdir(), 'neftune-bundle-'));
try {
  const model = path.join(dir, 'm.onnx');
  writeFileSync(model, encodeModel(buildTinyGpt()));
  const run = spawnSync(process.execPath, [path.join(root, 'dist', 'cli', 'bin.cjs'), 'patch', model, '-o', path.join(dir, 'out.onnx'), '--json'], {
    env: { ...process.env, NEFTUNE_WRITE_CODE_CACHE: cache },
    encoding: 'utf8',
  });
  if (run.status !== 0) throw new Error(`warm-up run failed (${run.status}): ${run.stderr}`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
