/**
 * Benchmarks. Every target is printed as a ratio against a baseline measured in the same run,
 * because these machines are noisy. Usage: npm run bench [-- --only=startup,llama,sparse,encode,large,graph,runtime,step,train,ort119]
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir, cpus, totalmem } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { encodeModel } from '../src/graph/index.js';
import { writeFileAtomic } from '../src/io/index.js';
import { buildTinyGpt } from '../examples/models.js';
import { buildLargeGpt, buildManyNodes } from './models.js';
import { writeLlamaShaped } from './make-llama.js';
import { encodeBench } from './encode.js';
import { runtimeBench } from './runtime.js';
import { stepBench } from './step.js';
import { trainBench } from './train.js';
import { ort119Bench } from './train-ort119.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const cli = path.join(root, 'dist', 'cli', 'bin.cjs'); // the installed `neftune` (bundle + code cache)
const pythonScript = path.join(root, 'bench', 'python_patch.py');
const work = mkdtempSync(path.join(tmpdir(), 'onnx-neftune-bench-'));
const only = new Set((process.argv.find((a) => a.startsWith('--only='))?.slice(7) ?? 'startup,llama,sparse,encode,large,graph,runtime,step,train,ort119').split(','));
const results: Array<{ name: string; value: number; target: string; ok: boolean | null; note: string }> = [];

function report(name: string, value: number, target: string, ok: boolean | null, note = ''): void {
  results.push({ name, value, target, ok, note });
  console.log(`${ok === null ? 'INFO' : ok ? 'PASS' : 'MISS'}  ${name.padEnd(52)} ${value.toFixed(3).padStart(9)}   target ${target}${note ? `   (${note})` : ''}`);
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** Wall time and peak RSS of a command, via GNU time when present. */
function measure(cmd: string, args: string[], clean?: string, env: NodeJS.ProcessEnv = process.env): { seconds: number; rssBytes: number | null } {
  if (clean) rmSync(clean, { force: true });
  const gnuTime = existsSync('/usr/bin/time');
  const start = process.hrtime.bigint();
  const r = gnuTime
    ? spawnSync('/usr/bin/time', ['-f', '%M', cmd, ...args], { encoding: 'utf8', env })
    : spawnSync(cmd, args, { encoding: 'utf8', env });
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr}`);
  const kb = gnuTime ? Number(r.stderr.trim().split('\n').at(-1)) : NaN;
  return { seconds, rssBytes: Number.isFinite(kb) ? kb * 1024 : null };
}

type Run = { seconds: number; rssBytes: number | null };
/** Median time and the largest peak RSS of several runs. */
function summarize(runs: Run[]): Run {
  return { seconds: median(runs.map((r) => r.seconds)), rssBytes: Math.max(...runs.map((r) => r.rssBytes ?? 0)) || null };
}
function repeat(times: number, run: () => Run): Run {
  return summarize(Array.from({ length: times }, run));
}

/** Debian's python3-onnx, installed here if missing and possible; undefined means skip. */
function python(): string | undefined {
  for (const exe of ['/usr/bin/python3', 'python3']) {
    if (spawnSync(exe, ['-c', 'import onnx'], { encoding: 'utf8' }).status === 0) return exe;
  }
  if (process.getuid?.() === 0 && existsSync('/usr/bin/apt-get')) {
    console.log('installing python3-onnx (Debian) for the Python comparison ...');
    spawnSync('apt-get', ['install', '-y', '-q', 'python3-onnx'], { stdio: 'ignore' });
    if (spawnSync('/usr/bin/python3', ['-c', 'import onnx'], { encoding: 'utf8' }).status !== 0) {
      spawnSync('sh', ['-c', 'apt-get update -q && apt-get install -y -q python3-onnx'], { stdio: 'ignore' });
    }
    if (spawnSync('/usr/bin/python3', ['-c', 'import onnx'], { encoding: 'utf8' }).status === 0) return '/usr/bin/python3';
  }
  console.log('SKIP  Python onnx comparison: python3-onnx is not installed and could not be installed here');
  return undefined;
}

async function large(py: string | undefined): Promise<void> {
  console.log('\n# ~600 MB single-file GPT-shaped model (vocab 50k x 1024, 12 MLP blocks)');
  const file = path.join(work, 'large.onnx');
  await writeFileAtomic(file, [encodeModel(buildLargeGpt())]);
  const size = statSync(file).size;
  console.log(`model: ${(size / 2 ** 20).toFixed(0)} MB`);
  const out = path.join(work, 'large.out.onnx');
  const patched = path.join(work, 'large.patched.onnx');
  measure(process.execPath, [cli, 'patch', file, '-o', patched], patched);
  // Flush the freshly written files first, then interleave the runs, so that background
  // write-back and cache state weigh on cp and on neftune alike.
  spawnSync('sync');
  const bareCopy = path.join(root, 'dist', 'bench', 'bare-copy.js');
  const rounds = { cp: [] as Run[], node: [] as Run[], patch: [] as Run[], strip: [] as Run[] };
  for (let i = 0; i < 7; i++) {
    rounds.cp.push(measure('cp', [file, out], out));
    rounds.node.push(measure(process.execPath, [bareCopy, file, out], out));
    rounds.patch.push(measure(process.execPath, [cli, 'patch', file, '-o', out], out));
    rounds.strip.push(measure(process.execPath, [cli, 'strip', patched, '-o', out], out));
  }
  const [cp, node, patch, strip] = [rounds.cp, rounds.node, rounds.patch, rounds.strip].map(summarize) as [Run, Run, Run, Run];
  const mb = (r: Run) => `${((r.rssBytes ?? 0) / 2 ** 20).toFixed(0)} MB`;
  console.log(`cp ${cp.seconds.toFixed(2)} s; bare Node read/write copy ${node.seconds.toFixed(2)} s, peak RSS ${mb(node)}; patch ${patch.seconds.toFixed(2)} s, peak RSS ${mb(patch)}; strip ${strip.seconds.toFixed(2)} s, peak RSS ${mb(strip)}`);
  // Per-round ratios, then their median: a slow round (another process on the disk) weighs on both sides of it.
  const ratio = (a: Run[], b: Run[]) => median(a.map((r, i) => r.seconds / b[i]!.seconds));
  const note = 'median of per-round ratios, 7 interleaved rounds; a new output is not flushed to disk, as with cp';
  for (const [name, runs] of [['patch', rounds.patch], ['strip', rounds.strip]] as const) {
    const vsNode = ratio(runs, rounds.node);
    report(`${name} 600 MB: time / bare Node read/write copy`, vsNode, '<= 1.2', vsNode <= 1.2, name === 'patch' ? note : '');
    report(`${name} 600 MB: time / cp`, ratio(runs, rounds.cp), 'reference', null);
  }
  report('bare Node read/write copy: time / cp (reference)', ratio(rounds.node, rounds.cp), 'reference', null);
  if (patch.rssBytes) report('patch 600 MB: peak RSS / file size', patch.rssBytes / size, '<= 0.2', patch.rssBytes / size <= 0.2);
  if (strip.rssBytes) report('strip 600 MB: peak RSS / file size', strip.rssBytes / size, '<= 0.2', strip.rssBytes / size <= 0.2);
  if (py) {
    const pyRun = repeat(1, () => measure(py, [pythonScript, file, out], out));
    report('patch 600 MB: Python onnx time / neftune time', pyRun.seconds / patch.seconds, '>= 10', pyRun.seconds / patch.seconds >= 10, `python ${pyRun.seconds.toFixed(2)} s`);
    if (pyRun.rssBytes) report('Python onnx peak RSS / file size (reference)', pyRun.rssBytes / size, 'about 2', null);
  }
  for (const f of [file, out, patched]) rmSync(f, { force: true });
}

function graphSize(): void {
  console.log('\n# graph size: inspect and patch time at 10k, 100k, 1M nodes');
  const times: Record<string, number[]> = { inspect: [], patch: [] };
  const sizes = [10_000, 100_000, 1_000_000];
  for (const n of sizes) {
    const file = path.join(work, `chain_${n}.onnx`);
    writeFileSync(file, encodeModel(buildManyNodes(n)));
    const out = path.join(work, `chain_${n}.out.onnx`);
    const inspect = repeat(3, () => measure(process.execPath, [cli, 'inspect', file, '--json'])).seconds;
    const patch = repeat(3, () => measure(process.execPath, [cli, 'patch', file, '-o', out], out)).seconds;
    times['inspect']!.push(inspect);
    times['patch']!.push(patch);
    console.log(`${n} nodes: inspect ${inspect.toFixed(2)} s, patch ${patch.toFixed(2)} s`);
    if (n === sizes.at(-1)) {
      const phases = spawnSync(process.execPath, [path.join(root, 'dist', 'bench', 'phases.js'), file, out], { encoding: 'utf8' });
      if (phases.status === 0) {
        const ms = JSON.parse(phases.stdout) as Record<string, number>;
        console.log(`${n} nodes in one process: ${Object.entries(ms).map(([k, v]) => `${k} ${(v / 1000).toFixed(2)} s`).join(', ')}`);
      }
      rmSync(out, { force: true });
    }
    rmSync(file, { force: true }); rmSync(out, { force: true });
  }
  for (const cmd of ['inspect', 'patch']) {
    const t = times[cmd]!;
    report(`${cmd} 1M nodes: seconds`, t[2]!, '<= 3', t[2]! <= 3);
    report(`${cmd}: time(1M) / time(100k)`, t[2]! / t[1]!, '~10 (linear)', t[2]! / t[1]! <= 13);
    report(`${cmd}: time(100k) / time(10k)`, t[1]! / t[0]!, '<= 10 (linear, startup amortised)', t[1]! / t[0]! <= 13);
  }
}

async function startup(py: string | undefined): Promise<void> {
  console.log('\n# small model (~700 kB GPT-shaped): process start to exit');
  const file = path.join(work, 'small.onnx');
  await writeFileAtomic(file, [encodeModel(buildTinyGpt({ vocab: 2560, dim: 64, maxPositions: 128 }))]);
  console.log(`model: ${(statSync(file).size / 1024).toFixed(0)} kB`);
  const out = path.join(work, 'small.out.onnx');
  const ours = repeat(9, () => measure(process.execPath, [cli, 'patch', file, '-o', out], out)).seconds;
  report('patch small model: milliseconds', ours * 1000, '<= 150', ours <= 0.15);
  let theirs: number | undefined;
  if (py) {
    theirs = repeat(9, () => measure(py, [pythonScript, file, out], out)).seconds;
    report('patch small model: neftune time / Python onnx time', ours / theirs, '<= 1', ours / theirs <= 1, `python ${(theirs * 1000).toFixed(0)} ms`);
  }
  const bare = repeat(9, () => measure(process.execPath, ['-e', '0'])).seconds;
  report('Node start-up alone (node -e 0): milliseconds', bare * 1000, 'reference', null);
  // Loading the CLI before any work: bundle evaluation and yargs, nothing read.
  const version = repeat(9, () => measure(process.execPath, [cli, '--version'])).seconds;
  report('neftune --version minus node -e 0: milliseconds', (version - bare) * 1000, 'reported', null, `--version ${(version * 1000).toFixed(0)} ms`);
  // NODE_EXTRA_CA_CERTS makes Node 20 load a certificate file at start-up, before any of our code
  // runs (about 70 ms on these machines); show what the same command costs without it.
  if (process.env['NODE_EXTRA_CA_CERTS']) {
    const env = { ...process.env };
    delete env['NODE_EXTRA_CA_CERTS'];
    const clean = repeat(9, () => measure(process.execPath, [cli, 'patch', file, '-o', out], out, env)).seconds;
    const bareClean = repeat(9, () => measure(process.execPath, ['-e', '0'], undefined, env)).seconds;
    const versionClean = repeat(9, () => measure(process.execPath, [cli, '--version'], undefined, env)).seconds;
    report('patch small model without NODE_EXTRA_CA_CERTS: ms', clean * 1000, 'reference', null,
      `node -e 0 without it: ${(bareClean * 1000).toFixed(0)} ms; --version ${(versionClean * 1000).toFixed(0)} ms${theirs ? `; / Python ${(clean / theirs).toFixed(2)}` : ''}`);
  }
}

/** Median seconds of each command, run in interleaved rounds so drift weighs on all alike. */
function interleaved(rounds: number, commands: Record<string, { cmd: string; args: string[]; clean?: string; env?: NodeJS.ProcessEnv }>): Record<string, Run> {
  const runs: Record<string, Run[]> = Object.fromEntries(Object.keys(commands).map((k) => [k, []]));
  for (let r = 0; r < rounds; r++) {
    for (const [name, c] of Object.entries(commands)) runs[name]!.push(measure(c.cmd, c.args, c.clean, c.env));
  }
  return Object.fromEntries(Object.entries(runs).map(([k, v]) => [k, summarize(v)]));
}

const ms = (run: Run | undefined) => `${((run?.seconds ?? 0) * 1000).toFixed(0)} ms`;

function llama(py: string | undefined): void {
  console.log('\n# Llama-2-7B shaped graph (9,878 nodes, 27 GB of weights in one external file, sparse here)');
  const dir = path.join(work, 'llama');
  const { model } = writeLlamaShaped(dir);
  const out = path.join(dir, 'out.onnx');
  const commands: Parameters<typeof interleaved>[1] = {
    patch: { cmd: process.execPath, args: [cli, 'patch', model, '-o', out, '--json'], clean: out },
    inspect: { cmd: process.execPath, args: [cli, 'inspect', model, '--json'] },
  };
  if (py) {
    commands['python patch'] = { cmd: py, args: [pythonScript, model, out, '--no-external-data'], clean: out };
    commands['python inspect'] = { cmd: py, args: [pythonScript, model, '--inspect', '--no-external-data'] };
  }
  const r = interleaved(7, commands);
  console.log(Object.entries(r).map(([k, v]) => `${k} ${ms(v)}`).join(', '));
  if (!py) return;
  const patch = r['python patch']!.seconds / r['patch']!.seconds, inspect = r['python inspect']!.seconds / r['inspect']!.seconds;
  report('Llama-7B shaped patch: Python onnx time / neftune time', patch, '>= 2', patch >= 2, `python ${ms(r['python patch'])} with load_external_data=False, neftune ${ms(r['patch'])}`);
  report('Llama-7B shaped inspect: Python onnx time / neftune time', inspect, '>= 3', inspect >= 3, `python ${ms(r['python inspect'])}, neftune ${ms(r['inspect'])}`);
  rmSync(dir, { recursive: true, force: true });
}

/** Disk space a file or folder takes (allocated blocks, not length). */
function allocated(file: string): number {
  const r = spawnSync('du', ['-s', '-B1', file], { encoding: 'utf8' });
  return Number(r.stdout.split(/\s/)[0]);
}

function sparse(): void {
  console.log('\n# patch into another folder: Llama-7B shaped model, 27 GB sparse external data (4 MiB written)');
  const dir = path.join(work, 'sparse');
  const { model } = writeLlamaShaped(dir);
  // Some real data in the hole-filled file, so the copy has extents to copy too.
  spawnSync('dd', ['if=/dev/urandom', `of=${path.join(dir, 'model.onnx_data')}`, 'bs=1M', 'count=4', 'seek=100', 'conv=notrunc', 'status=none']);
  const [ours, theirs] = [path.join(work, 'sparse-out'), path.join(work, 'sparse-cp')];
  const fresh = (p: string) => { rmSync(p, { recursive: true, force: true }); return undefined; };
  const runs: Record<string, Run[]> = { patch: [], cp: [] };
  for (let i = 0; i < 5; i++) {
    fresh(ours); runs['patch']!.push(measure(process.execPath, [cli, 'patch', model, '-o', path.join(ours, 'model.onnx')]));
    fresh(theirs); runs['cp']!.push(measure('cp', ['-r', '--reflink=auto', dir, theirs]));
  }
  const [patch, cp] = [summarize(runs['patch']!), summarize(runs['cp']!)];
  const [inSpace, outSpace] = [allocated(dir), allocated(ours)];
  console.log(`patch -o other folder ${ms(patch)}, cp -r --reflink=auto ${ms(cp)}; disk space: input folder ${(inSpace / 2 ** 20).toFixed(1)} MiB, output folder ${(outSpace / 2 ** 20).toFixed(1)} MiB`);
  report('sparse patch to another folder: time / cp -r --reflink=auto', patch.seconds / cp.seconds, '<= 1.2', patch.seconds / cp.seconds <= 1.2, `${ms(patch)} vs ${ms(cp)}; includes the patch itself`);
  report('sparse patch to another folder: output space / input space', outSpace / inSpace, '<= 1 (holes kept)', outSpace <= inSpace * 1.01);
  for (const p of [dir, ours, theirs]) rmSync(p, { recursive: true, force: true });
}

function encode(): void {
  console.log('\n# encodeModel in process: 600 MB single-file model, 5 interleaved rounds');
  const r = encodeBench(5);
  const ratio = r.ms['encodeModel']! / r.ms['protobufjs reflection']!;
  console.log(`${(r.bytes / 2 ** 20).toFixed(0)} MB: ${Object.entries(r.ms).map(([k, v]) => `${k} ${v.toFixed(0)} ms`).join(', ')}`);
  report('encodeModel 600 MB: time / protobufjs reflection encode', ratio, '<= 1.2', ratio <= 1.2);
}

console.log(`onnx-neftune benchmarks on ${cpus().length} x ${cpus()[0]?.model ?? 'cpu'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}`);
const py = only.has('large') || only.has('startup') || only.has('llama') ? python() : undefined;
try {
  if (only.has('startup')) await startup(py);
  if (only.has('llama')) llama(py);
  if (only.has('sparse')) sparse();
  if (only.has('encode')) encode();
  if (only.has('large')) await large(py);
  if (only.has('graph')) graphSize();
  if (only.has('runtime')) for (const r of await runtimeBench()) report(r.name, r.value, r.target, r.ok, r.note);
  if (only.has('step')) for (const r of stepBench(work)) report(r.name, r.value, r.target, r.ok, r.note);
  if (only.has('train')) for (const r of trainBench(work)) report(r.name, r.value, r.target, r.ok, r.note);
  if (only.has('ort119')) for (const r of ort119Bench(work)) report(r.name, r.value, r.target, r.ok, r.note);
} finally {
  rmSync(work, { recursive: true, force: true });
}
const missed = results.filter((r) => r.ok === false);
console.log(`\n${results.filter((r) => r.ok).length} targets met, ${missed.length} missed${missed.length ? `: ${missed.map((r) => r.name).join('; ')}` : ''}`);
