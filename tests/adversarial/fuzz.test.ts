/**
 * Seeded mutation fuzzing of the whole in-memory pipeline over the shared fixtures (original and
 * patched): decode -> findEmbeddings -> applyNeftune (two option sets) -> encode -> decode ->
 * stripNeftune -> encode. Only OnnxNeftuneError subclasses may be thrown, memory stays bounded,
 * and whenever a mutant patches, strip(patch(m)) encodes to exactly encode(m).
 *
 * Every mutant is determined by (FUZZ_SEED, fixture, variant, iteration), printed on failure.
 * Environment:
 *   FUZZ_SEED        base seed (default 1)
 *   FUZZ_BUDGET_MS   time budget for the whole run, split evenly across fixtures (default 40000)
 *   FUZZ_ITERATIONS  mutants per fixture and variant; when set, the budget is ignored (deterministic count)
 *   FUZZ_ONLY        "fixture|variant|iteration" to replay one mutant
 *   FUZZ_DUMP        with FUZZ_ONLY: also write the mutant's bytes to this file, to study it
 */
import { test } from 'node:test';
import { writeFileSync } from 'node:fs';
import assert from 'node:assert/strict';
import { OnnxNeftuneError, decodeModel, decodeModelProto, encodeModel, encodeModelProto } from '../../src/graph/index.js';
import { encodeVarint } from '../../src/graph/varint.js';
import { applyNeftune, findEmbeddings, stripNeftune, type NeftuneOptions } from '../../src/passes/index.js';
import { fixtureNames, firstDifference, patchIfPossible, readFixture, sameBytes, skipWithoutFixtures } from '../helpers.js';

/**
 * Untyped failures found by this fuzzer in other areas' files, tolerated until they are fixed
 * there. Each entry: the error (name: message) and the source file of the first project frame.
 * Empty this list once the fixes are merged.
 */
const KNOWN_OPEN: { item: string; error: RegExp; file: RegExp }[] = [
  // Every failure the fuzz finds is a defect to fix, not to list. An entry here would name an issue
  // item still open, with the error signature and the file it comes from. None is open.
]

const SEED = Number(process.env['FUZZ_SEED'] ?? 1);
const BUDGET_MS = Number(process.env['FUZZ_BUDGET_MS'] ?? 40_000);
const ITERATIONS = process.env['FUZZ_ITERATIONS'] ? Number(process.env['FUZZ_ITERATIONS']) : undefined;
const ONLY = process.env['FUZZ_ONLY']?.split('|');
const MEMORY_LIMIT = 1.5 * 1024 ** 3;

const OPTION_SETS: [string, NeftuneOptions][] = [
  ['default', {}],
  ['all-candidates, alpha input, seed, after-scale', { allCandidates: true, alphaInput: true, seed: 7, alpha: 10, afterScale: true }],
];

// ---------------------------------------------------------------- seeded randomness

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
function hashSeed(...parts: (string | number)[]): number {
  let h = 2166136261;
  for (const ch of parts.join('|')) h = Math.imul(h ^ ch.charCodeAt(0), 16777619) >>> 0;
  return h;
}

// ---------------------------------------------------------------- structure of the inputs

/**
 * The fields of the input, read as nested messages wherever the bytes parse as one. Each field
 * knows its enclosing length-delimited field, so a mutation inside it can re-encode every
 * enclosing length prefix: the mutant is then still well-formed around the change and reaches
 * the code behind the structure check.
 */
interface FieldAt { start: number; afterTag: number; tag: number; end: number; parent: number; body?: [number, number] }
interface Layout { tags: number[]; lengths: { at: number; size: number; value: number }[]; fields: FieldAt[] }

function readVarint(buf: Uint8Array, pos: number, end: number): [number, number] | undefined {
  let value = 0, scale = 1;
  for (let i = 0; i < 10 && pos < end; i++) {
    const b = buf[pos++]!;
    value += (b & 0x7f) * scale;
    if (b < 0x80) return [value, pos];
    scale *= 128;
  }
  return undefined;
}

function layoutOf(buf: Uint8Array): Layout {
  const layout: Layout = { tags: [], lengths: [], fields: [] };
  const work: [number, number, number, number][] = [[0, buf.length, 0, -1]];
  while (work.length && layout.fields.length < 200_000) {
    const [start, end, depth, parent] = work.pop()!;
    const found: FieldAt[] = [];
    let pos = start, ok = true;
    while (pos < end) {
      const tagAt = pos;
      const tag = readVarint(buf, pos, end);
      if (!tag || tag[0] < 8) { ok = false; break; }
      pos = tag[1];
      const wire = tag[0] % 8;
      const field: FieldAt = { start: tagAt, afterTag: pos, tag: tag[0], end: 0, parent };
      if (wire === 0) { const v = readVarint(buf, pos, end); if (!v) { ok = false; break; } pos = v[1]; }
      else if (wire === 1) pos += 8;
      else if (wire === 5) pos += 4;
      else if (wire === 2) {
        const len = readVarint(buf, pos, end);
        if (!len || len[1] + len[0] > end) { ok = false; break; }
        field.body = [len[1], len[1] + len[0]];
        pos = len[1] + len[0];
      } else { ok = false; break; }
      if (pos > end) { ok = false; break; }
      field.end = pos;
      found.push(field);
    }
    if (!ok || pos !== end) continue;
    for (const f of found) {
      const index = layout.fields.push(f) - 1;
      layout.tags.push(f.start);
      if (f.body) {
        layout.lengths.push({ at: f.afterTag, size: f.body[0] - f.afterTag, value: f.body[1] - f.body[0] });
        if (f.body[1] > f.body[0] && depth < 60) work.push([f.body[0], f.body[1], depth + 1, index]);
      }
    }
  }
  return layout;
}

/** `buf` with the bytes of field `index` replaced by `replacement`, every enclosing length prefix re-encoded. */
function replaceField(buf: Uint8Array, layout: Layout, index: number, replacement: Uint8Array): Uint8Array {
  const field = layout.fields[index]!;
  let inner = replacement, from = field.start, to = field.end;
  for (let p = field.parent; p >= 0; p = layout.fields[p]!.parent) {
    const outer = layout.fields[p]!;
    const [bodyStart, bodyEnd] = outer.body!;
    const body = cat(buf.subarray(bodyStart, from), inner, buf.subarray(to, bodyEnd));
    inner = cat(buf.subarray(outer.start, outer.afterTag), encodeVarint(body.length), body);
    from = outer.start; to = outer.end;
  }
  return cat(buf.subarray(0, from), inner, buf.subarray(to));
}

function cat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}

// ---------------------------------------------------------------- mutations

interface Corpus { name: string; bytes: Uint8Array; layout: Layout }

function splice(buf: Uint8Array, at: number, remove: number, insert: Uint8Array): Uint8Array {
  at = Math.min(at, buf.length);
  remove = Math.max(0, Math.min(remove, buf.length - at));
  const out = new Uint8Array(buf.length - remove + insert.length);
  out.set(buf.subarray(0, at), 0);
  out.set(insert, at);
  out.set(buf.subarray(at + remove), at + insert.length);
  return out;
}

/** A non-minimal varint: `value` padded with continuation bytes to `size` bytes (size up to 11, invalid past 10). */
function paddedVarint(value: number, size: number): Uint8Array {
  const min = encodeVarint(value);
  if (size <= min.length) return min;
  const out = new Uint8Array(size);
  out.set(min);
  for (let i = 0; i < min.length; i++) out[i]! |= 0x80;
  for (let i = min.length; i < size - 1; i++) out[i] = 0x80;
  out[size - 1] = 0;
  return out;
}

function mutate(entry: Corpus, others: Corpus[], rand: () => number): { bytes: Uint8Array; what: string } {
  const { bytes, layout } = entry;
  const int = (n: number) => Math.floor(rand() * n);
  // Half of the positions are field starts: structure matters more than payload bytes.
  const position = () => (layout.tags.length && rand() < 0.5 ? layout.tags[int(layout.tags.length)]! + int(3) : int(bytes.length));
  if (layout.fields.length && rand() < 0.5) return mutateField(entry, others, rand);
  const kind = int(9);
  switch (kind) {
    case 8: {
      if (!layout.tags.length) return { bytes: bytes.subarray(0, int(bytes.length)), what: 'truncated (no tags)' };
      const at = layout.tags[int(layout.tags.length)]!;
      const [tag, after] = readVarint(bytes, at, bytes.length)!;
      const field = Math.floor(tag / 8), wire = tag % 8;
      const choice = int(4);
      const replacement = choice === 0 ? paddedVarint(tag, 6 + int(5)) // longer than protobuf allows
        : choice === 1 ? paddedVarint(tag + 2 ** 32 * (1 + int(7)), 5) // above 2^32
        : choice === 2 ? encodeVarint(wire) // field number 0
        : encodeVarint(field * 8 + [3, 4, 6, 7][int(4)]!); // group or invalid wire type
      return { bytes: splice(bytes, at, after - at, replacement), what: `tag at ${at} (field ${field}, wire ${wire}) rewritten as ${[...replacement].map((b) => b.toString(16)).join(' ')}` };
    }
    case 0: {
      const out = bytes.slice();
      const flips = 1 + int(4);
      const where: number[] = [];
      for (let i = 0; i < flips; i++) { const at = Math.min(position(), out.length - 1); const bit = int(8); out[at]! ^= 1 << bit; where.push(at * 8 + bit); }
      return { bytes: out, what: `bit flips at bit offsets ${where.join(', ')}` };
    }
    case 1: {
      const out = bytes.slice();
      const at = Math.min(position(), out.length - 1);
      const value = [0x00, 0xff, 0x80, 0x7f][int(4)]!;
      out[at] = value;
      return { bytes: out, what: `byte ${at} set to 0x${value.toString(16)}` };
    }
    case 2: {
      const at = layout.tags.length && rand() < 0.5 ? layout.tags[int(layout.tags.length)]! : int(bytes.length);
      return { bytes: bytes.subarray(0, at), what: `truncated to ${at} bytes` };
    }
    case 3: {
      const from = position(), len = 1 + int(Math.min(256, bytes.length - from));
      const at = position();
      return { bytes: splice(bytes, at, 0, bytes.slice(from, from + len)), what: `bytes ${from}+${len} duplicated at ${at}` };
    }
    case 4: {
      const from = position(), len = 1 + int(Math.min(64, bytes.length - from));
      return { bytes: splice(bytes, from, len, new Uint8Array()), what: `bytes ${from}+${len} deleted` };
    }
    case 5: case 6: {
      if (!layout.lengths.length) return { bytes: bytes.subarray(0, int(bytes.length)), what: 'truncated (no length prefixes)' };
      const l = layout.lengths[int(layout.lengths.length)]!;
      const choice = int(6);
      const value = [l.value + 1 + int(3), Math.max(0, l.value - 1 - int(3)), 0, 2 ** 31 - 1, 2 ** 32 + int(1000), l.value][choice]!;
      const size = choice === 5 ? 6 + int(6) : encodeVarint(value).length;
      return { bytes: splice(bytes, l.at, l.size, paddedVarint(value, size)), what: `length prefix at ${l.at} (${l.value}) rewritten as ${value} in ${size} bytes` };
    }
    default: {
      const other = others[int(others.length)]!;
      const from = int(other.bytes.length), len = 1 + int(Math.min(512, other.bytes.length - from));
      const at = layout.tags.length ? layout.tags[int(layout.tags.length)]! : int(bytes.length);
      const replace = rand() < 0.5 ? int(Math.min(64, bytes.length - at)) : 0;
      return {
        bytes: splice(bytes, at, replace, other.bytes.slice(from, from + len)),
        what: `bytes ${from}+${len} of ${other.name} spliced at ${at} replacing ${replace}`,
      };
    }
  }
}

/** A change to one field, its enclosing lengths re-encoded (see replaceField). */
function mutateField(entry: Corpus, others: Corpus[], rand: () => number): { bytes: Uint8Array; what: string } {
  const { bytes, layout } = entry;
  const int = (n: number) => Math.floor(rand() * n);
  const index = int(layout.fields.length);
  const f = layout.fields[index]!;
  const number = Math.floor(f.tag / 8), wire = f.tag % 8;
  const value = bytes.subarray(f.afterTag, f.end);
  const where = `field ${number} (wire ${wire}) at ${f.start}`;
  const put = (replacement: Uint8Array, what: string) => ({ bytes: replaceField(bytes, layout, index, replacement), what: `${where}: ${what}, enclosing lengths re-encoded` });
  switch (int(7)) {
    case 0: {
      const choice = int(4);
      const tag = choice === 0 ? paddedVarint(f.tag, 6 + int(5))
        : choice === 1 ? paddedVarint(f.tag + 2 ** 32 * (1 + int(7)), 5)
        : choice === 2 ? encodeVarint(wire)
        : encodeVarint(number * 8 + [3, 4, 6, 7][int(4)]!);
      return put(cat(tag, value), `tag rewritten as ${[...tag].map((b) => b.toString(16)).join(' ')}`);
    }
    case 1: {
      if (!f.body) break;
      const len = f.body[1] - f.body[0];
      const choice = int(3);
      const prefix = choice === 0 ? paddedVarint(len, 6 + int(5)) : choice === 1 ? paddedVarint(len, 5) : encodeVarint(len + 1 + int(4));
      return put(cat(bytes.subarray(f.start, f.afterTag), prefix, bytes.subarray(f.body[0], f.body[1])), `length prefix rewritten as ${[...prefix].map((b) => b.toString(16)).join(' ')}`);
    }
    case 2: return put(cat(bytes.subarray(f.start, f.end), bytes.subarray(f.start, f.end)), 'duplicated');
    case 3: return put(new Uint8Array(), 'deleted');
    case 4: {
      const other = others[int(others.length)]!;
      if (!other.layout.fields.length) break;
      const g = other.layout.fields[int(other.layout.fields.length)]!;
      return put(cat(bytes.subarray(f.start, f.end), other.bytes.subarray(g.start, g.end)), `followed by field ${Math.floor(g.tag / 8)} at ${g.start} of ${other.name}`);
    }
    case 5: {
      // Another value for the same field: a varint at an edge, or a body from elsewhere.
      if (wire === 0) {
        const v = [0, 1, 2 ** 31, 2 ** 32 - 1, 2 ** 53, 99, 3][int(7)]!;
        return put(cat(bytes.subarray(f.start, f.afterTag), v === 2 ** 53 ? paddedVarint(1, 10) : encodeVarint(v)), `value set to ${v}`);
      }
      if (!f.body) break;
      const other = layout.fields[int(layout.fields.length)]!;
      const body = other.body ? bytes.subarray(other.body[0], other.body[1]) : new Uint8Array();
      return put(cat(bytes.subarray(f.start, f.afterTag), encodeVarint(body.length), body), `body replaced by the body at ${other.start}`);
    }
    default: {
      if (!f.body) break;
      // The body emptied, or one byte of it changed.
      if (rand() < 0.5 || f.body[1] === f.body[0]) return put(cat(bytes.subarray(f.start, f.afterTag), Uint8Array.of(0)), 'body emptied');
      const body = bytes.slice(f.body[0], f.body[1]);
      const at = int(body.length);
      body[at] = [0x00, 0xff, 0x80, 0x7f][int(4)]!;
      return put(cat(bytes.subarray(f.start, f.afterTag), encodeVarint(body.length), body), `body byte ${at} set to 0x${body[at]!.toString(16)}`);
    }
  }
  return put(new Uint8Array(), 'deleted');
}

// ---------------------------------------------------------------- the pipeline

class FuzzFailure extends Error {}

/** The first stack frame in the project's sources, e.g. "src/passes/neftune.ts". */
function projectFrame(error: Error): string {
  for (const line of (error.stack ?? '').split('\n')) {
    if (line.includes('node_modules')) continue;
    const match = /\/((?:src|cli)\/[\w/.-]+?)\.(?:ts|js)\b/.exec(line);
    if (match) return `${match[1]}.ts`;
  }
  return '(no project frame)';
}

/** Throws KnownOpen when `signature` at `file` is in KNOWN_OPEN, else FuzzFailure with `detail`. */
function fail(signature: string, file: string, detail: string, known: Map<string, number>): never {
  const open = KNOWN_OPEN.find((k) => k.error.test(signature) && k.file.test(file));
  if (open) {
    known.set(open.item, (known.get(open.item) ?? 0) + 1);
    throw new KnownOpen(open.item, detail);
  }
  throw new FuzzFailure(detail);
}

/** Runs `step`; an OnnxNeftuneError is a refusal (returned), anything else is classified. */
function typed<T>(step: () => T, known: Map<string, number>): T | OnnxNeftuneError {
  try {
    return step();
  } catch (error) {
    if (error instanceof OnnxNeftuneError) return error;
    const e = error instanceof Error ? error : new Error(String(error));
    const signature = `${e.name}: ${e.message}`;
    const file = projectFrame(e);
    return fail(signature, file, `untyped ${signature} (first project frame ${file})\n${e.stack}`, known);
  }
}
class KnownOpen extends Error {
  constructor(readonly item: string, readonly detail: string) { super(item); }
}

function runPipeline(mutant: Uint8Array, known: Map<string, number>): string {
  const model = typed(() => decodeModel(mutant), known);
  if (model instanceof OnnxNeftuneError) return 'refused by decode';
  const base = typed(() => encodeModel(model), known);
  if (base instanceof OnnxNeftuneError) return 'refused by encode';
  typed(() => findEmbeddings(model), known);
  let patched = 0;
  for (const [label, options] of OPTION_SETS) {
    const fresh = typed(() => decodeModel(mutant), known);
    if (fresh instanceof OnnxNeftuneError) throw new FuzzFailure(`decoding the same bytes twice differs: ${fresh.message}`);
    if (typed(() => applyNeftune(fresh, options), known) instanceof OnnxNeftuneError) continue;
    const bytes = typed(() => encodeModel(fresh), known);
    if (bytes instanceof OnnxNeftuneError) continue;
    const again = typed(() => decodeModel(bytes), known);
    if (again instanceof OnnxNeftuneError) throw new FuzzFailure(`the patched model (${label}) does not decode: ${again.message}`);
    if (typed(() => stripNeftune(again), known) instanceof OnnxNeftuneError) continue;
    const stripped = typed(() => encodeModel(again), known);
    if (stripped instanceof OnnxNeftuneError) continue;
    if (!sameBytes(stripped, base)) {
      // Same messages once both are re-encoded canonically: only the bytes of re-encoded nodes differ.
      const encodingOnly = sameBytes(encodeModelProto(decodeModelProto(stripped)), encodeModelProto(decodeModelProto(base)));
      const detail = `strip(patch(m)) with ${label} differs from encode(m) at byte ${firstDifference(stripped, base)} ` +
        `(lengths ${stripped.length} vs ${base.length}; ${encodingOnly ? 'encoding only' : 'content differs'})`;
      const reserved = Buffer.from(base).includes('neftune__') ? ' (input holds reserved names)' : '';
      fail(`StripMismatch: ${encodingOnly ? 'encoding only' : `content${reserved}`}`, 'src/passes/neftune.ts', detail, known);
    }
    patched++;
  }
  return patched ? `patched and stripped (${patched})` : 'decoded';
}

// ---------------------------------------------------------------- the test

test('seeded mutants of every fixture (original and patched) only ever fail typed', { skip: skipWithoutFixtures, timeout: 10 * 60_000 }, (t) => {
  const corpus: Corpus[] = [];
  for (const name of fixtureNames()) {
    const bytes = readFixture(name);
    corpus.push({ name: `${name}|original`, bytes, layout: layoutOf(bytes) });
    const model = decodeModel(bytes);
    if (patchIfPossible(model)) {
      const patched = encodeModel(model);
      corpus.push({ name: `${name}|patched`, bytes: patched, layout: layoutOf(patched) });
    }
  }
  const entries = ONLY ? corpus.filter((c) => c.name === `${ONLY[0]}|${ONLY[1]}`) : corpus;
  assert.ok(entries.length, `no corpus entry ${ONLY?.slice(0, 2).join('|')}`);
  const known = new Map<string, number>();
  const outcomes = new Map<string, number>();
  const failures: string[] = [];
  const examples = new Map<string, string>();
  let total = 0, peakRss = 0;
  const share = BUDGET_MS / entries.length;
  for (const entry of entries) {
    const started = Date.now();
    const others = corpus.filter((c) => c !== entry);
    const first = ONLY ? Number(ONLY[2]) : 0;
    const last = ONLY ? first + 1 : ITERATIONS ?? Infinity;
    let i = first;
    for (; i < last; i++) {
      if (ITERATIONS === undefined && !ONLY && Date.now() - started > share) break;
      const seed = hashSeed(SEED, entry.name, i);
      const { bytes, what } = mutate(entry, others, mulberry32(seed));
      const replay = `FUZZ_SEED=${SEED} FUZZ_ONLY='${entry.name}|${i}'`;
      try {
        if (ONLY && process.env['FUZZ_DUMP']) writeFileSync(process.env['FUZZ_DUMP'], bytes);
        const outcome = runPipeline(bytes, known);
        outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
      } catch (error) {
        if (error instanceof KnownOpen) {
          outcomes.set('known open', (outcomes.get('known open') ?? 0) + 1);
          if (!examples.has(error.item)) examples.set(error.item, `${entry.name} iteration ${i} (seed ${seed}): ${what}\n  replay: ${replay}\n  ${error.detail.split('\n').slice(0, 6).join('\n  ')}`);
          continue;
        }
        const message = error instanceof FuzzFailure ? error.message : `test harness error ${(error as Error).stack}`;
        failures.push(`${entry.name} iteration ${i} (seed ${seed}): ${what}\n  replay: ${replay}\n  ${message}`);
        if (failures.length >= 5) break;
      }
      const { rss, heapUsed } = process.memoryUsage();
      peakRss = Math.max(peakRss, rss);
      if (rss > MEMORY_LIMIT || heapUsed > MEMORY_LIMIT) {
        failures.push(`${entry.name} iteration ${i} (seed ${seed}): ${what}: memory ${Math.round(rss / 2 ** 20)} MB RSS, ${Math.round(heapUsed / 2 ** 20)} MB heap\n  replay: ${replay}`);
        break;
      }
    }
    total += i - first;
    if (failures.length >= 5) break;
  }
  t.diagnostic(`seed ${SEED}: ${total} mutants over ${entries.length} corpus entries; peak RSS ${Math.round(peakRss / 2 ** 20)} MB`);
  t.diagnostic(`outcomes: ${[...outcomes].map(([k, v]) => `${k} ${v}`).join(', ')}`);
  if (known.size) t.diagnostic(`known open (KNOWN_OPEN): ${[...known].map(([k, v]) => `${k} x${v}`).join(', ')}`);
  for (const [item, example] of examples) for (const line of `first ${item}: ${example}`.split('\n')) t.diagnostic(line);
  assert.deepEqual(failures, [], `fuzz failures:\n${failures.join('\n\n')}`);
});
