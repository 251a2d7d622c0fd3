/**
 * Benchmarks. Every target is printed as a ratio against a baseline measured in the same run,
 * because these machines are noisy. Usage: npm run bench [-- --only=startup,llama,decode,sparse,encode,large,graph,runtime,step,train,ort119]
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
import { DECODE_CASES, type DecodeCase, type PhaseMs } from './decode.js';
import { runtimeBench } from './runtime.js';
import { stepBench } from './step.js';
import { trainBench } from './train.js';
import { ort119Bench } from './train-ort119.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const cli = path.join(root, 'dist', 'cli', 'bin.cjs'); // the installed `neftune` (bundle + code cache)
const pythonScript = path.join(root, 'bench', 'python_patch.py');
const work = mkdtempSync(path.join(tmpdir(), 'onnx-neftune-bench-'));
const only = new Set((process.argv.find((a) => a.startsWith('--only='))?.slice(7) ?? 'startup,llama,decode,sparse,encode,large,graph,runtime,step,train,ort119').split(','));
const results: Array<{ name: string; value: number; target: string; ok: boolean | null; note: string }> = [];

function report(name: string, value: number, target: string, ok: boolean | null, note = ''): void {
  results.push({ name, value, target, ok, note });
  console.log(`${ok === null ? 'INFO' : ok ? 'PASS' : 'MISS'}  ${name.padEnd(52)} ${value.toFixed(3).padStart(9)}   target ${target}${note ? `   (${note})` : ''}`);
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** Wall time, and CPU time (user + sys) and peak RSS via GNU time when present, of a command. */
function measure(cmd: string, args: string[], clean?: string, env: NodeJS.ProcessEnv = process.env): Run {
  if (clean) rmSync(clean, { force: true });
  const gnuTime = existsSync('/usr/bin/time');
  const start = process.hrtime.bigint();
  const r = gnuTime
    ? spawnSync('/usr/bin/time', ['-f', '%U %S %M', cmd, ...args], { encoding: 'utf8', env })
    : spawnSync(cmd, args, { encoding: 'utf8', env });
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr}`);
  const [user, sys, kb] = gnuTime ? r.stderr.trim().split('\n').at(-1)!.split(' ').map(Number) : [];
  const known = (x: number | undefined) => x !== undefined && Number.isFinite(x);
  return { seconds, cpuSeconds: known(user) && known(sys) ? user! + sys! : null, rssBytes: known(kb) ? kb! * 1024 : null };
}

type Run = { seconds: number; cpuSeconds: number | null; rssBytes: number | null };
/** Median wall and CPU time and the largest peak RSS of several runs. */
function summarize(runs: Run[]): Run {
  const cpu = runs.flatMap((r) => r.cpuSeconds ?? []);
  return { seconds: median(runs.map((r) => r.seconds)), cpuSeconds: cpu.length ? median(cpu) : null, rssBytes: Math.max(...runs.map((r) => r.rssBytes ?? 0)) || null };
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
  console.log('\n# graph size: whole-process inspect --json and patch at 10k, 100k, 1M nodes, 3 interleaved rounds, median time, largest peak RSS');
  const sizes = [10_000, 100_000, 1_000_000];
  const bySize: Array<Record<string, Run>> = [];
  for (const n of sizes) {
    const file = path.join(work, `chain_${n}.onnx`);
    writeFileSync(file, encodeModel(buildManyNodes(n)));
    const out = path.join(work, `chain_${n}.out.onnx`);
    const r = interleaved(3, {
      inspect: { cmd: process.execPath, args: [cli, 'inspect', file, '--json'] },
      patch: { cmd: process.execPath, args: [cli, 'patch', file, '-o', out], clean: out },
    });
    bySize.push(r);
    console.log(`${n} nodes: ${Object.entries(r).map(([k, v]) => `${k} ${runText(v)}`).join('; ')}`);
    if (n === sizes.at(-1)) {
      const phases = spawnSync(process.execPath, [path.join(root, 'dist', 'bench', 'phases.js'), file, out], { encoding: 'utf8' });
      if (phases.status === 0) {
        const ms = JSON.parse(phases.stdout) as Record<string, number>;
        console.log(`${n} nodes in one process: ${Object.entries(ms).map(([k, v]) => `${k} ${(v / 1000).toFixed(2)} s`).join(', ')}`);
      }
      lazyWalk(file);
    }
    rmSync(file, { force: true }); rmSync(out, { force: true });
  }
  for (const cmd of ['inspect', 'patch']) {
    const [small, mid, big] = bySize.map((r) => r[cmd]!) as [Run, Run, Run];
    const gb = (big.rssBytes ?? NaN) / 1e9;
    report(`${cmd} 1M nodes: seconds`, big.seconds, '<= 1.5', big.seconds <= 1.5, `CPU ${cpuText(big)}`);
    report(`${cmd} 1M nodes: peak RSS GB`, gb, '<= 0.6', Number.isFinite(gb) ? gb <= 0.6 : null);
    report(`${cmd}: time(1M) / time(100k)`, big.seconds / mid.seconds, '<= 10', big.seconds / mid.seconds <= 10);
    report(`${cmd}: time(100k) / time(10k)`, mid.seconds / small.seconds, '<= 10', mid.seconds / small.seconds <= 10);
    if (big.rssBytes && mid.rssBytes && small.rssBytes) {
      report(`${cmd}: peak RSS(1M) / peak RSS(100k)`, big.rssBytes / mid.rssBytes, '<= 10', big.rssBytes / mid.rssBytes <= 10, `100k / 10k: ${(mid.rssBytes / small.rssBytes).toFixed(2)}`);
    }
  }
}

/** findNodes over half of a 1M-node graph then every result's uses, against walking everything first (bench/lazy-walk.ts), 3 interleaved rounds. */
function lazyWalk(file: string): void {
  const run = (how: string) => {
    const p = spawnSync(process.execPath, [path.join(root, 'dist', 'bench', 'lazy-walk.js'), file, how, 'Relu'], { encoding: 'utf8' });
    if (p.status !== 0) throw new Error(`lazy-walk.js ${how} failed: ${p.stderr}`);
    return (JSON.parse(p.stdout) as { ms: number }).ms;
  };
  const ratios: number[] = [];
  const times: Record<string, number[]> = { lazy: [], eager: [] };
  for (let round = 0; round < 3; round++) {
    const lazy = run('lazy'), eager = run('eager');
    times['lazy']!.push(lazy); times['eager']!.push(eager);
    ratios.push(lazy / eager);
  }
  const ratio = median(ratios);
  report('findNodes (half of 1M nodes) + uses / walk everything first + the same', ratio, '<= 1.2', ratio <= 1.2,
    `${median(times['lazy']!).toFixed(0)} vs ${median(times['eager']!).toFixed(0)} ms`);
}

/**
 * Wall and CPU (user + system) seconds of one process, via bash: its clock around the command and
 * `times` for the children's CPU (millisecond resolution; GNU time's is 10 ms). Output goes to
 * /dev/null, alike for every command compared.
 */
function processCost(cmd: string, args: string[], env: NodeJS.ProcessEnv, clean?: string): { wall: number; cpu: number } {
  if (clean) rmSync(clean, { force: true });
  const script = 's=$EPOCHREALTIME; "$@" >/dev/null 2>&1 || exit 99; e=$EPOCHREALTIME; times; echo "$s $e"';
  const r = spawnSync('bash', ['-c', script, 'cost', cmd, ...args], { encoding: 'utf8', env });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status})`);
  const [, children, clock] = r.stdout.trim().split('\n');
  const cpu = [...children!.matchAll(/(\d+)m([\d.]+)s/g)].reduce((sum, m) => sum + Number(m[1]) * 60 + Number(m[2]), 0);
  const [start, end] = clock!.split(' ').map(Number);
  return { wall: end! - start!, cpu };
}

async function startup(py: string | undefined): Promise<void> {
  console.log('\n# small model (~700 kB GPT-shaped): process start to exit, wall and CPU, medians of interleaved rounds');
  const file = path.join(work, 'small.onnx');
  await writeFileAtomic(file, [encodeModel(buildTinyGpt({ vocab: 2560, dim: 64, maxPositions: 128 }))]);
  console.log(`model: ${(statSync(file).size / 1024).toFixed(0)} kB`);
  const out = path.join(work, 'small.out.onnx');
  const cases: Record<string, { cmd: string; args: string[]; clean?: string }> = {
    'node -e 0': { cmd: process.execPath, args: ['-e', '0'] },
    'neftune --version': { cmd: process.execPath, args: [cli, '--version'] },
    'neftune inspect': { cmd: process.execPath, args: [cli, 'inspect', file] },
    'neftune patch': { cmd: process.execPath, args: [cli, 'patch', file, '-o', out], clean: out },
    ...(py ? { 'python onnx patch': { cmd: py, args: [pythonScript, file, out], clean: out } } : {}),
  };
  // NODE_EXTRA_CA_CERTS makes Node 20 load a certificate file at start-up, before any of our code
  // runs (about 30 ms of CPU on these machines); show every case with and without it.
  const withoutCa = { ...process.env };
  delete withoutCa['NODE_EXTRA_CA_CERTS'];
  const variants: Record<string, NodeJS.ProcessEnv> = process.env['NODE_EXTRA_CA_CERTS']
    ? { 'with NODE_EXTRA_CA_CERTS': process.env, 'without NODE_EXTRA_CA_CERTS': withoutCa } : { '': process.env };
  const runs: Record<string, Array<{ wall: number; cpu: number }>> = {};
  for (let round = 0; round < 15; round++) {
    for (const [name, c] of Object.entries(cases)) {
      for (const [variant, env] of Object.entries(variants)) (runs[`${name}|${variant}`] ??= []).push(processCost(c.cmd, c.args, env, c.clean));
    }
  }
  const cost = (name: string, variant: string) => {
    const r = runs[`${name}|${variant}`]!;
    return { wall: median(r.map((x) => x.wall)) * 1000, cpu: median(r.map((x) => x.cpu)) * 1000 };
  };
  const names = Object.keys(variants);
  for (const name of Object.keys(cases)) {
    for (const v of names) {
      const c = cost(name, v);
      console.log(`${name.padEnd(20)} ${v.padEnd(26)} wall ${c.wall.toFixed(1).padStart(6)} ms   CPU ${c.cpu.toFixed(1).padStart(6)} ms`);
    }
  }
  const [main] = names as [string];
  const ours = cost('neftune patch', main);
  report('patch small model: milliseconds', ours.wall, '<= 150', ours.wall <= 150);
  if (py) {
    for (const variant of names) {
      const [a, b] = [cost('neftune patch', variant), cost('python onnx patch', variant)];
      const label = variant === main ? '' : ` (${variant})`;
      report(`patch small model: neftune / Python onnx time${label}`, a.wall / b.wall, '<= 1', a.wall / b.wall <= 1, `CPU ratio ${(a.cpu / b.cpu).toFixed(2)}; python ${b.wall.toFixed(0)} ms`);
    }
  }
  for (const variant of names) {
    // Loading the CLI before any work: bundle evaluation and yargs, nothing read.
    const [bare, version] = [cost('node -e 0', variant), cost('neftune --version', variant)];
    report(`neftune --version minus node -e 0: CPU ms${variant === main ? '' : ` (${variant})`}`, version.cpu - bare.cpu, 'reported', null, `node -e 0 ${bare.cpu.toFixed(0)} ms CPU, ${bare.wall.toFixed(0)} ms wall`);
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
const cpuText = (run: Run) => (run.cpuSeconds === null ? 'n/a' : `${(run.cpuSeconds * 1000).toFixed(0)} ms`);
const runText = (run: Run) => `${ms(run)} wall, ${cpuText(run)} CPU${run.rssBytes ? `, peak RSS ${(run.rssBytes / 2 ** 20).toFixed(0)} MB` : ''}`;

function llama(py: string | undefined): void {
  console.log('\n# Llama-2-7B shaped graph (9,878 nodes, 27 GB of weights in one external file, sparse here), 7 interleaved rounds, medians');
  const dir = path.join(work, 'llama');
  const { model } = writeLlamaShaped(dir);
  const out = path.join(dir, 'out.onnx');
  // Node 20 reads the NODE_EXTRA_CA_CERTS file at start-up, before any of our code: measure with and without it.
  const noCa = { ...process.env };
  delete noCa['NODE_EXTRA_CA_CERTS'];
  const envs: Array<[string, NodeJS.ProcessEnv]> = process.env['NODE_EXTRA_CA_CERTS'] ? [['', process.env], [' (no CA var)', noCa]] : [['', process.env]];
  const commands: Parameters<typeof interleaved>[1] = {};
  for (const [tag, env] of envs) {
    commands[`patch${tag}`] = { cmd: process.execPath, args: [cli, 'patch', model, '-o', out, '--json'], clean: out, env };
    commands[`inspect${tag}`] = { cmd: process.execPath, args: [cli, 'inspect', model, '--json'], env };
    // The floor: process start with no work, which no decode change can remove.
    commands[`node -e 0${tag}`] = { cmd: process.execPath, args: ['-e', '0'], env };
    commands[`--version${tag}`] = { cmd: process.execPath, args: [cli, '--version'], env };
  }
  if (py) {
    commands['python patch'] = { cmd: py, args: [pythonScript, model, out, '--no-external-data'], clean: out };
    commands['python inspect'] = { cmd: py, args: [pythonScript, model, '--inspect', '--no-external-data'] };
  }
  const r = interleaved(7, commands);
  for (const [k, v] of Object.entries(r)) console.log(`${k.padEnd(28)} ${runText(v)}`);
  rmSync(dir, { recursive: true, force: true });
  if (!py) return;
  for (const [tag] of envs) {
    const floor = `node -e 0 ${ms(r[`node -e 0${tag}`])}, --version ${ms(r[`--version${tag}`])}`;
    for (const [cmd, times] of [['patch', 2], ['inspect', 3]] as const) {
      const [ours, theirs, version] = [r[`${cmd}${tag}`]!, r[`python ${cmd}`]!, r[`--version${tag}`]!];
      const name = `Llama-7B shaped ${cmd}${tag}: Python / neftune`;
      report(`${name}, wall`, theirs.seconds / ours.seconds, `>= ${times}`, theirs.seconds / ours.seconds >= times, `python ${ms(theirs)} (load_external_data=False), neftune ${ms(ours)}`);
      if (ours.cpuSeconds && theirs.cpuSeconds) {
        report(`${name}, CPU`, theirs.cpuSeconds / ours.cpuSeconds, `>= ${times}`, theirs.cpuSeconds / ours.cpuSeconds >= times, `python ${cpuText(theirs)}, neftune ${cpuText(ours)}`);
      }
      // How much of the time the target allows is gone before any work starts.
      report(`  floor: --version${tag} / (Python ${cmd} / ${times})`, version.seconds * times / theirs.seconds, 'reported', null, floor);
    }
  }
}

/**
 * In-process decode against protobufjs reflection decode of the same bytes (bench/decode.ts), one
 * fresh process per case and round: the first call is what the CLI pays, the warmed calls what a
 * long-running library user pays.
 */
function decode(): void {
  console.log('\n# in-process decode (bench/decode.ts): fresh process per case, cases interleaved per round, medians');
  const many = path.join(work, 'decode-1m.onnx');
  writeFileSync(many, encodeModel(buildManyNodes(1_000_000)));
  const models = [
    { label: 'Llama-7B shaped', file: writeLlamaShaped(path.join(work, 'decode-llama')).model, rounds: 5, repeats: 10 },
    { label: '1M nodes', file: many, rounds: 3, repeats: 1 },
  ];
  const script = path.join(root, 'dist', 'bench', 'decode.js');
  for (const m of models) {
    // runs[case][round] = one process's calls, the first call first
    const runs = Object.fromEntries(DECODE_CASES.map((c) => [c, [] as PhaseMs[][]])) as Record<DecodeCase, PhaseMs[][]>;
    for (let round = 0; round < m.rounds; round++) {
      for (const c of DECODE_CASES) {
        const p = spawnSync(process.execPath, [script, m.file, c, String(m.repeats)], { encoding: 'utf8' });
        if (p.status !== 0) throw new Error(`decode.js ${c} failed: ${p.stderr}`);
        runs[c].push(JSON.parse(p.stdout) as PhaseMs[]);
      }
    }
    const first = (calls: PhaseMs[]) => calls[0]!;
    const warm = (calls: PhaseMs[]) => Object.fromEntries(Object.keys(calls[0]!).map((k) => [k, median(calls.slice(1).map((x) => x[k]!))]));
    const perPhase = (c: DecodeCase, pick: (calls: PhaseMs[]) => PhaseMs) =>
      Object.fromEntries(Object.keys(runs[c][0]![0]!).map((k) => [k, median(runs[c].map((calls) => pick(calls)[k]!))]));
    const text = (phases: PhaseMs) => {
      const total = Object.values(phases).reduce((a, b) => a + b, 0);
      return Object.keys(phases).length > 1 ? `${Object.entries(phases).map(([k, v]) => `${k} ${v.toFixed(0)}`).join(' + ')} = ${total.toFixed(0)} ms` : `${total.toFixed(0)} ms`;
    };
    console.log(`${m.label}, ${m.rounds} rounds, first call / median of ${m.repeats} warmed calls per process:`);
    for (const c of DECODE_CASES) console.log(`  ${c.padEnd(12)} first ${text(perPhase(c, first))}; warmed ${text(perPhase(c, warm))}`);
    for (const [when, pick] of [['first call', first], ['warmed', warm]] as const) {
      const ratio = median(runs.decodeModel.map((calls, round) => pick(calls)['decode']! / pick(runs.protobufjs[round]!)['decode']!));
      report(`${m.label} decodeModel / protobufjs decode, ${when}`, ratio, '<= 1', ratio <= 1, 'median of per-round ratios');
    }
  }
  rmSync(many, { force: true });
  rmSync(path.join(work, 'decode-llama'), { recursive: true, force: true });
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
  if (only.has('decode')) decode();
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
