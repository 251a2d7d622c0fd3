/**
 * Proves on ONNX Runtime that a patched model does what its patch record claims. Browser-safe:
 * the ONNX Runtime module (onnxruntime-node or onnxruntime-web) is passed in.
 *
 * For every patched site the probe exposes both the clean lookup output and the noisy value, so
 * noise = noisy - clean is measured exactly on the same run. Checks per site:
 *   noise      every element within +-s, mean and spread of U(-s, s) (see stats.ts), for each run;
 *              s = alpha / sqrt(L*d) per element (per row in mask mode, per segment in packed mode)
 *   padding    (mask, packed) padded positions carry exactly zero noise (part of the noise check)
 *   fresh      each run draws new noise (no replayed constant)
 *   alpha-zero (alpha input) alpha 0 gives exactly the clean embedding
 *   strip      the stripped model computes exactly the clean embedding at the site
 * The model runs whole when ONNX Runtime can; otherwise (training-only ops, missing external data,
 * inputs that cannot be made up, sites inside subgraphs) the slice from the inputs to the site runs.
 */
import { OnnxNeftuneError } from '../graph/errors.js';
import { DataType, dataTypeName, float32ToFloat16Bits as f16, isIntegerType, parseDataType } from '../graph/dtype.js';
import { encodeModel } from '../graph/codec.js';
import { Node, Value, type Graph, type Model } from '../graph/ir.js';
import { attr, makeAttribute } from '../graph/builder.js';
import { extractSlice } from '../graph/slice.js';
import { describeCandidate, findEmbeddings, graphsWithPaths } from '../passes/embeddings.js';
import { isPatched, readPatchRecord, stripNeftune, type PatchedSite, type PatchRecord } from '../passes/neftune.js';
import { checkUniformNoise, type UniformNoiseCheck } from './stats.js';
import { PatchMismatchError } from '../passes/errors.js';

export interface OrtTensorLike { readonly data: unknown; readonly dims: readonly number[]; readonly type: string }
export interface OrtSessionLike {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  run(feeds: Record<string, OrtTensorLike>): Promise<Record<string, OrtTensorLike>>;
  release(): Promise<void>;
}
/** The part of onnxruntime-node / onnxruntime-web that verification uses. */
export interface OrtLike {
  InferenceSession: { create(model: Uint8Array, options?: Record<string, unknown>): Promise<OrtSessionLike> };
  Tensor: new (type: string, data: unknown, dims: readonly number[]) => OrtTensorLike;
  env: { versions?: Record<string, string | undefined> };
}

export interface VerifyOptions {
  ort: OrtLike;
  /** Name for the report: cpu, cuda, wasm. */
  ep: string;
  /** Passed to InferenceSession.create (executionProviders, externalData, ...). */
  sessionOptions?: Record<string, unknown>;
  batch?: number;
  seq?: number;
  runs?: number;
  falseAlarm?: number;
  /** Initializers whose external data is not available: the slice feeds made-up values instead. */
  unavailable?: (tensorName: string) => boolean;
  /** Run only the slice even when the whole model could run. */
  sliceOnly?: boolean;
  /** Why the whole model cannot run (known before trying, e.g. missing external data): run the slice. */
  wholeModelUnavailable?: string;
}

export interface CheckResult { name: 'noise' | 'fresh' | 'alpha-zero' | 'strip'; ok: boolean; detail: string }

/** A check that was not carried out, and why (e.g. `fresh` needs two runs). */
export interface SkippedCheck { name: CheckResult['name']; reason: string }

/** An input as it was fed: its shape, and where each dimension's size came from. */
export interface FedInput { name: string; type: string; dims: number[]; origin: string[] }

export interface SiteReport {
  value: string;
  lookup: string;
  table: string;
  dtype: string;
  ok: boolean;
  checks: CheckResult[];
  notRun: SkippedCheck[];
  /** The inputs exactly as fed to the session that was checked. */
  inputs: FedInput[];
  /**
   * Whether a second session, created in the same process from the same model, drew the same noise
   * as the first on its first run. ONNX Runtime seeds unseeded RandomUniformLike per session from a
   * fixed sequence, so this is a property of the runtime, reported for training loops, not a failure.
   */
  newSession: { replayed: boolean; detail: string } | null;
  stats: Pick<UniformNoiseCheck, 'count' | 'zeroCount' | 'maxAbsZ' | 'meanZ' | 'meanZ2' | 'meanZScore' | 'secondMomentZScore' | 'threshold' | 'histogram'> | null;
}

export interface VerifyReport {
  ok: boolean;
  patched: boolean;
  ep: string;
  ortVersion: string;
  mode: string | null;
  alpha: number | null;
  ran: 'whole' | 'slice' | 'none';
  sliceReason: string | null;
  batch: number;
  seq: number;
  runs: number;
  sites: SiteReport[];
  candidates: string[];
  /** What differs from what was asked (fixed dims that override --seq, checks that were not run, replayed noise). */
  notes: string[];
  message: string;
}

/**
 * Verification could not be carried out as asked (options out of range, an input it cannot make
 * up, a patched value missing): nothing was shown wrong with the noise, it was not checked.
 */
export class VerifyError extends OnnxNeftuneError {
  constructor(message: string) { super('VERIFY_UNABLE', message); }
}

/** Verification ran and a check failed (the report says which): the patch does not do what it should. */
export class VerifyFailedError extends OnnxNeftuneError {
  constructor(message: string) { super('VERIFY_FAILED', message); }
}

const PROBE_PREFIX = 'neftune_verify__';

export async function verifyNeftune(model: Model, options: VerifyOptions): Promise<VerifyReport> {
  const batch = options.batch ?? 2, asked = options.seq ?? 16, runs = options.runs ?? 3;
  if (![batch, asked, runs].every((n) => Number.isInteger(n) && n >= 1)) throw new VerifyError(`batch, seq and runs must be positive integers, got ${batch}, ${asked}, ${runs}`);
  const { seq, capNote } = sequenceFitting(model, asked);
  const ortVersion = Object.values(options.ort.env.versions ?? {}).find(Boolean) ?? 'unknown';
  const base = { ep: options.ep, ortVersion, batch, seq, runs };
  const record = readPatchRecord(model);
  if (!isPatched(model) || !record) {
    const report = findEmbeddings(model);
    return {
      ...base, ok: false, patched: isPatched(model), mode: null, alpha: null, ran: 'none', sliceReason: null, sites: [],
      candidates: report.candidates.map(describeCandidate), notes: [],
      message: isPatched(model) ? 'The model carries patch nodes but its patch record is missing; patch the model again with the repatch option to verify.'
        : `Nothing is patched. ${report.targetReason}.`,
    };
  }
  // Probes and the strip check work on clones (the IR copied, payloads shared), never on the
  // caller's model, and never on an encoded copy of it: a 200 MB model is not held twice more.
  const snapshot = model.clone();
  // A patch that is not exactly what this tool emits is refused by strip: the strip check fails with why.
  let stripped: Model | string = snapshot.clone();
  try { stripNeftune(stripped); } catch (error) { if (!(error instanceof PatchMismatchError)) throw error; stripped = error.message; }
  const ctx: Ctx = { options, record, batch, seq, runs, patchedOpset: model.opsetVersion('') };
  const sites: SiteReport[] = [];
  let ran: VerifyReport['ran'] = 'whole';
  let sliceReason: string | null = null;
  for (const site of record.sites) {
    const result = await verifySite(ctx, snapshot, stripped, site);
    sites.push(result.report);
    if (result.ran === 'slice') { ran = 'slice'; sliceReason ??= result.reason; }
  }
  const ok = sites.every((s) => s.ok);
  const failed = sites.flatMap((s) => s.checks.filter((c) => !c.ok).map((c) => `${s.value}: ${c.name}: ${c.detail}`));
  return {
    ...base, ok, patched: true, mode: record.options.mode, alpha: record.options.alpha, ran, sliceReason, sites, candidates: [],
    notes: [...(capNote ? [capNote] : []), ...reportNotes(sites, batch, seq)],
    message: ok ? `All checks passed on ${options.ep} (ONNX Runtime ${ortVersion}) for ${sites.length} site(s).` : `Checks failed: ${failed.join('; ')}`,
  };
}

interface Ctx { options: VerifyOptions; record: PatchRecord; batch: number; seq: number; runs: number; patchedOpset: number | undefined }

interface Probe { bytes: Uint8Array; noisy: string; clean: string; ran: 'whole' | 'slice'; reason: string | null; model: Model }

async function verifySite(ctx: Ctx, patched: Model, stripped: Model | string, site: PatchedSite): Promise<{ report: SiteReport; ran: 'whole' | 'slice'; reason: string | null }> {
  const report: SiteReport = { value: site.value, lookup: site.lookup, table: site.table, dtype: site.dtype, ok: false, checks: [], notRun: [], inputs: [], newSession: null, stats: null };
  const { ort } = ctx.options;
  let session: OrtSessionLike | undefined;
  let probe: Probe | undefined;
  let feeds: Record<string, OrtTensorLike> = byName();
  let smoke: Record<string, OrtTensorLike> = {};
  let firstError: string | null = ctx.options.wholeModelUnavailable ?? null;
  for (const whole of ctx.options.sliceOnly || firstError ? [false] : [true, false]) {
    try {
      probe = buildProbe(patched.clone(), site, whole, ctx);
      if (!probe) continue;
      session = await ort.InferenceSession.create(probe.bytes, sessionOptionsOf(ctx));
      ({ feeds, inputs: report.inputs } = makeFeeds(ort, probe.model, session.inputNames, ctx));
      smoke = await session.run(feeds); // smoke run: a whole model may load but fail to run
      if (!whole) probe.reason = firstError ?? probe.reason;
      break;
    } catch (error) {
      await session?.release().catch(() => undefined);
      session = undefined;
      firstError ??= `ONNX Runtime cannot run the whole model (${firstLine(error)})`;
      // Inputs that cannot be made up even for the slice: nothing can be checked (could not verify, not a failed check).
      if (!whole && error instanceof VerifyError) throw new VerifyError(`Cannot verify ${site.value}: ${error.message}`);
      if (!whole) {
        report.checks.push({ name: 'noise', ok: false, detail: `cannot run the slice either: ${firstLine(error)}` });
        return { report, ran: 'slice', reason: firstError };
      }
    }
  }
  if (!session || !probe) throw new VerifyError(`No runnable probe for ${site.value}`);
  try {
    const alphaInput = alphaInputName(ctx.record);
    const alpha = ctx.record.options.alpha;
    if (alphaInput && session.inputNames.includes(alphaInput)) feeds[alphaInput] = new ort.Tensor('float32', Float32Array.from([alpha]), []);

    // Every run's noise is checked element by element; the moments are tested on all runs pooled
    // (independent draws), which gives the test more power than any single run.
    const noises: Float64Array[] = [];
    const scales: Float64Array[] = [];
    const tolerances: Float64Array[] = [];
    let clean: Float32Array | undefined;
    const ulp = site.dtype === 'FLOAT16' ? 2 ** -10 : site.dtype === 'BFLOAT16' ? 2 ** -7 : 0;
    for (let r = 0; r < ctx.runs; r++) {
      const out = await runOrFail(session, feeds, `run ${r + 1} of ${ctx.runs}`);
      const noisy = out[probe.noisy]!.data as Float32Array;
      clean = out[probe.clean]!.data as Float32Array;
      const expected = expectedScale(out[probe.noisy]!.dims, alpha, site, ctx.record.options.mode, feeds);
      const scale = typeof expected === 'number' ? new Float64Array(noisy.length).fill(expected) : expected;
      noises.push(Float64Array.from(noisy, (x, i) => x - clean![i]!));
      scales.push(scale);
      tolerances.push(Float64Array.from(clean, (x, i) => (ulp ? (Math.abs(x) + scale[i]!) * ulp : 1e-6 * alpha)));
    }
    const check = checkUniformNoise(concat(noises), concat(scales), { tolerance: concat(tolerances), falseAlarm: ctx.options.falseAlarm ?? 1e-6 });
    const { count, zeroCount, maxAbsZ, meanZ, meanZ2, meanZScore, secondMomentZScore, threshold, histogram } = check;
    report.stats = { count, zeroCount, maxAbsZ, meanZ, meanZ2, meanZScore, secondMomentZScore, threshold, histogram };
    const few = count < 1000 ? '; few samples: raise the batch, seq or runs option for a stronger test' : '';
    report.checks.push({
      name: 'noise', ok: check.ok,
      detail: check.ok ? `${count} noised elements over ${ctx.runs} runs (${zeroCount} padding at zero), |noise/s| <= ${maxAbsZ.toFixed(3)}, mean ${meanZ.toFixed(4)} (${meanZScore.toFixed(2)} SE), E[(noise/s)^2] ${meanZ2.toFixed(4)} vs 1/3 (${secondMomentZScore.toFixed(2)} SE; limit ${threshold.toFixed(2)} SE)${few}`
        : check.failures.join('; '),
    });
    if (noises.length >= 2) report.checks.push(freshCheck(noises, site.dtype));
    else report.notRun.push({ name: 'fresh', reason: `needs at least two runs to see the noise change; ${ctx.runs} run was asked for` });
    if (alphaInput && session.inputNames.includes(alphaInput)) {
      const out = await runOrFail(session, { ...feeds, [alphaInput]: new ort.Tensor('float32', Float32Array.from([0]), []) }, 'the alpha-zero run');
      const noisy = out[probe.noisy]!.data as Float32Array, c = out[probe.clean]!.data as Float32Array;
      const differing = noisy.findIndex((x, i) => !Object.is(x, c[i]) && !(x === 0 && c[i] === 0));
      report.checks.push({ name: 'alpha-zero', ok: differing < 0, detail: differing < 0 ? `alpha 0 gives the clean embedding exactly (${noisy.length} elements)` : `element ${differing}: ${noisy[differing]} != clean ${c[differing]}` });
    }

    // The first session is done: release it before the next ones load, so a large model is held
    // by one ONNX Runtime session at a time (a new session replays the noise all the same).
    const first = session;
    session = undefined;
    await first.release();
    try {
      report.newSession = await newSessionCheck(ctx, probe, feeds, noiseOf(smoke, probe));
    } catch (error) {
      report.newSession = { replayed: false, detail: `not checked: a second session could not run (${firstLine(error)})` };
    }
    report.checks.push(await stripCheck(ctx, stripped, site, probe, feeds, clean!));
  } catch (error) {
    if (!(error instanceof RuntimeRunError)) throw error;
    report.checks.push({ name: report.checks.some((c) => c.name === 'noise') ? 'alpha-zero' : 'noise', ok: false, detail: error.message });
  } finally {
    await session?.release();
  }
  report.ok = report.checks.every((c) => c.ok);
  return { report, ran: probe.ran, reason: probe.reason };
}

/** ORT logging off by default: a whole-model attempt may fail (the report says why) and probes leave unused constants. */
function sessionOptionsOf(ctx: Ctx): Record<string, unknown> {
  return { logSeverityLevel: 4, ...(ctx.options.sessionOptions ?? {}) };
}

function concat(parts: Float64Array[]): Float64Array {
  const out = new Float64Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}

function firstLine(error: unknown): string {
  return String((error as Error)?.message ?? error).split('\n')[0]!.slice(0, 300);
}

function alphaInputName(record: PatchRecord): string | undefined {
  return record.added.graphInputs[0];
}

/**
 * Share of elements whose noise may repeat by chance between two fresh draws: none in float32;
 * in float16/bfloat16 the noisy sum is rounded to a coarse grid, so a few hundredths of the
 * elements land on the same rounded noise (1.1% seen for bf16). Replayed noise repeats everywhere.
 */
const CHANCE_REPEATS: Record<string, number> = { FLOAT16: 0.1, BFLOAT16: 0.2 };

function freshCheck(noises: Float64Array[], dtype: string): CheckResult {
  let worstShare = 0;
  for (let r = 1; r < noises.length; r++) {
    const [a, b] = [noises[r - 1]!, noises[r]!];
    let noised = 0, same = 0;
    for (let i = 0; i < a.length; i++) {
      if (a[i] === 0 && b[i] === 0) continue;
      noised++;
      if (a[i] === b[i]) same++;
    }
    worstShare = Math.max(worstShare, noised ? same / noised : 1);
  }
  const ok = worstShare < (CHANCE_REPEATS[dtype] ?? 0.01);
  return { name: 'fresh', ok, detail: ok ? `${noises.length} runs drew different noise` : `${(worstShare * 100).toFixed(1)}% of the noise repeats between runs: the noise is replayed, not drawn fresh` };
}

/** noisy - clean of one run's outputs. */
function noiseOf(out: Record<string, OrtTensorLike>, probe: Probe): Float64Array {
  const noisy = out[probe.noisy]!.data as Float32Array, clean = out[probe.clean]!.data as Float32Array;
  return Float64Array.from(noisy, (x, i) => x - clean[i]!);
}

/** Runs the probe in a second session and compares its first draw with the first session's first draw. */
async function newSessionCheck(ctx: Ctx, probe: Probe, feeds: Record<string, OrtTensorLike>, first: Float64Array): Promise<SiteReport['newSession']> {
  const session = await ctx.options.ort.InferenceSession.create(probe.bytes, sessionOptionsOf(ctx));
  try {
    const again = noiseOf(await session.run(feeds), probe);
    let noised = 0, same = 0;
    for (let i = 0; i < first.length; i++) {
      if (first[i] === 0 && again[i] === 0) continue;
      noised++;
      if (first[i] === again[i]) same++;
    }
    const replayed = noised > 0 && same / noised > 0.99;
    const seeded = ctx.record.options.seed !== undefined;
    return {
      replayed,
      detail: replayed
        ? `a second ONNX Runtime session in this process drew the same noise as the first${seeded ? ' (expected: the patch has a seed)' : ' (unseeded RandomUniformLike restarts the same sequence per session)'}: a training loop must keep one session for the whole run${seeded ? '' : ', or patch with a different seed per session'}`
        : 'a second session in this process drew different noise',
    };
  } finally {
    await session.release();
  }
}

/** The value `name` produced in the graph at `path` (sites may sit in subgraphs, with repeated names). */
function locate(model: Model, path: readonly string[], name: string): { graph: Graph; value: Value } | undefined {
  for (const entry of graphsWithPaths(model)) {
    if (entry.path.join('\u0000') !== path.join('\u0000')) continue;
    const value = entry.graph.value(name);
    if (value?.producer) return { graph: entry.graph, value };
  }
  return undefined;
}

/** A float32 view of `value` as a new output of `graph` (cast when the embedding is narrower). */
function probeOutput(graph: Graph, value: Value, dtype: string): Value {
  const type = parseDataType(dtype);
  if (type === DataType.FLOAT) return value;
  const out = new Value(`${PROBE_PREFIX}${value.name}_float`);
  graph.append(new Node('Cast', [value], [out], { name: `${PROBE_PREFIX}${value.name}_cast`, attributes: [makeAttribute('to', attr.int(DataType.FLOAT))] }));
  return out;
}


function buildProbe(model: Model, site: PatchedSite, whole: boolean, ctx: Ctx): Probe | undefined {
  const noisy = locate(model, site.graphPath, site.value);
  const clean = locate(model, site.graphPath, site.clean);
  if (!noisy || !clean) throw new VerifyError(`Patched value ${site.value} / ${site.clean} not found: the model does not match its patch record`);
  const graph = noisy.graph;
  const inSubgraph = graph !== model.graph;
  if (whole && inSubgraph) return undefined;
  const noisyOut = probeOutput(graph, noisy.value, site.dtype);
  const cleanOut = probeOutput(graph, clean.value, site.dtype);
  let probeModel: Model;
  let reason: string | null = null;
  if (whole) {
    for (const v of [noisyOut, cleanOut]) {
      if (!graph.outputs.includes(v)) { v.info ??= { name: v.name, type: { tensor_type: { elem_type: DataType.FLOAT } } }; graph.addOutput(v); }
    }
    probeModel = model;
  } else {
    reason = inSubgraph ? `the site is inside ${site.graphPath.slice(1).join(' / ')}` : null;
    const unavailable = ctx.options.unavailable;
    probeModel = extractSlice(model, graph, [noisyOut, cleanOut], { asInputs: (v) => !!v.initializer && v.initializer.storage === 'external' && !!unavailable?.(v.name) });
    replaceUnrunnableLookups(probeModel);
    relaxMadeUpTables(probeModel);
  }
  return { bytes: encodeModel(probeModel), noisy: noisyOut.name, clean: cleanOut.name, ran: whole ? 'whole' : 'slice', reason, model: probeModel };
}

/**
 * ATen embedding (ORTModule graphs) and the older com.microsoft ATenOp `aten::embedding` have no
 * inference kernel: the slice uses the equivalent Gather (padding_idx and the other flags only
 * change the gradient, not the forward lookup).
 */
function replaceUnrunnableLookups(model: Model): void {
  for (const graph of model.allGraphs()) {
    for (const node of graph) {
      if (!isAtenEmbedding(node)) continue;
      const out = node.output(0);
      const gather = new Node('Gather', [node.input(0), node.input(1)], [], { name: `${PROBE_PREFIX}${node.name ?? 'aten'}_gather`, attributes: [makeAttribute('axis', attr.int(0))] });
      graph.insertAfter(node, gather);
      graph.remove(node, { force: true });
      gather.appendOutput(out);
      out.graph = graph;
    }
  }
}

function isAtenEmbedding(node: Node): boolean {
  if (node.opType === 'ATen') return node.attributeValue<string>('operator', '') === 'embedding';
  return node.opType === 'ATenOp' && node.domain === 'com.microsoft' && node.attributeValue<string>('name', '') === 'aten::embedding';
}

/** Tables fed with made-up values are declared with a symbolic row count, so a smaller table can be fed. */
function relaxMadeUpTables(model: Model): void {
  for (const input of model.graph.inputs) {
    const dims = input.type?.tensor_type?.shape?.dim;
    if (dims?.length === 2 && input.type?.tensor_type?.elem_type !== undefined && !isIntegerType(input.type.tensor_type.elem_type)) {
      dims[0] = { dim_param: `${input.name}_rows` };
    }
  }
}

const MADE_UP_TABLE_ROWS = 1024;

/** Feeds for every input: token ids inside every table's range, masks with padding, packed position ids. */
function makeFeeds(ort: OrtLike, model: Model, names: readonly string[], ctx: Ctx): { feeds: Record<string, OrtTensorLike>; inputs: FedInput[] } {
  let rows = MADE_UP_TABLE_ROWS; // a loop, not Math.min(...list): a model may have 100,000s of tables
  for (const c of findEmbeddings(model).candidates) rows = Math.min(rows, c.table.rows ?? MADE_UP_TABLE_ROWS);
  const feeds: Record<string, OrtTensorLike> = byName();
  const inputs: FedInput[] = [];
  const alphaInput = alphaInputName(ctx.record);
  const declared = names.map((name) => {
    const value = model.graph.inputs.find((v) => v.name === name);
    const type = value?.type?.tensor_type;
    if (!value || !type || type.elem_type === undefined) throw new VerifyError(`Cannot make up a value for input ${name}: it has no tensor type`);
    if (!type.shape) throw new VerifyError(`Cannot make up a value for input ${name}: its rank is unknown`);
    return { name, elem: type.elem_type, dims: type.shape.dim ?? [] };
  });
  const sizes = new DimSizes(declared, ctx.batch, ctx.seq);
  for (const { name, elem, dims: declaredDims } of declared) {
    const fed = declaredDims.map((d, i) => sizes.of(name, d, i, declaredDims.length));
    const dims = fed.map((f) => f.size);
    const count = dims.reduce((a, b) => a * b, 1);
    let values: number[];
    if (name === alphaInput) values = [ctx.record.options.alpha];
    else if (/mask/i.test(name)) values = maskPattern(dims);
    else if (/position/i.test(name)) values = ctx.record.options.mode === 'packed' ? packedPositionIds(dims) : Array.from({ length: count }, (_, i) => i % (dims.at(-1) ?? 1));
    else if (/token_type|segment/i.test(name)) values = new Array(count).fill(0);
    else if (isIntegerType(elem)) values = Array.from({ length: count }, (_, i) => (i * 7 + 3) % rows);
    else values = Array.from({ length: count }, (_, i) => Math.sin(i * 12.9898) * 0.5);
    feeds[name] = tensorOf(ort, elem, values, dims);
    inputs.push({ name, type: dataTypeName(elem), dims, origin: fed.map((f) => f.origin) });
  }
  return { feeds, inputs };
}

type DeclaredDim = { dim_value?: unknown; dim_param?: string };
type Role = 'batch' | 'seq';

/**
 * Sizes for the declared dims of the inputs to feed. Fixed dims are kept. A symbolic dim gets a role
 * by where it is used: first dim of a rank >= 2 token-id, mask or position input is the batch, its
 * last dim the sequence (rank 1: the sequence); otherwise by its name (batch, seq/len/...; past
 * lengths are 0); the same name always gets the same size. Anything else is 1.
 */
class DimSizes {
  private readonly roles = new Map<string, Role>();
  constructor(inputs: Array<{ name: string; elem: number; dims: DeclaredDim[] }>, private readonly batch: number, private readonly seq: number) {
    for (const { name, elem, dims } of inputs) {
      if (!(isIntegerType(elem) || /ids|mask|position/i.test(name)) || dims.length > 2) continue;
      const at = (i: number) => (isFixed(dims[i]!) ? undefined : dims[i]!.dim_param);
      if (dims.length === 2) { this.assign(at(0), 'batch'); this.assign(at(1), 'seq'); }
      if (dims.length === 1) this.assign(at(0), 'seq');
    }
  }

  private assign(param: string | undefined, role: Role): void {
    if (param && !this.roles.has(param) && !/past/i.test(param)) this.roles.set(param, role);
  }

  of(input: string, d: DeclaredDim, index: number, rank: number): { size: number; origin: string } {
    if (isFixed(d)) {
      const size = Number(d.dim_value);
      const seqLike = rank <= 2 && index === rank - 1 && /ids|mask|position/i.test(input);
      return { size, origin: seqLike && size !== this.seq ? `fixed ${size} (not the requested sequence length ${this.seq})` : `fixed ${size}` };
    }
    const p = d.dim_param ?? '';
    if (p.endsWith('_rows')) return { size: MADE_UP_TABLE_ROWS, origin: 'made-up table rows' };
    const role = this.roles.get(p) ?? (/batch/i.test(p) ? 'batch' : /past/i.test(p) ? undefined : /seq|len|token|total|step/i.test(p) ? 'seq' : undefined);
    const label = p ? `"${p}"` : 'unnamed dim';
    if (/past/i.test(p) && !this.roles.has(p)) return { size: 0, origin: `${label}: past length 0` };
    if (role === 'batch') return { size: this.batch, origin: `${label}: batch` };
    if (role === 'seq') return { size: this.seq, origin: `${label}: sequence` };
    if (!p && rank >= 2 && index === 0) return { size: this.batch, origin: `${label}: batch (first dim)` };
    if (!p && rank === 2 && index === 1) return { size: this.seq, origin: `${label}: sequence (second dim)` };
    return { size: 1, origin: `${label}: 1 (role unknown)` };
  }
}

function isFixed(d: DeclaredDim): boolean {
  return d.dim_value !== undefined && Object.hasOwn(d, 'dim_value') && Number(d.dim_value) >= 0;
}

/** Notes for the report: inputs fed differently from what was asked, checks not run, replayed noise. */
/**
 * The made-up sequence length, capped so that a past and a current length both fit the model's
 * smallest position table (half of it each): a KV-cache model whose past alone takes the requested
 * length would index past its position table and never run whole.
 */
function sequenceFitting(model: Model, asked: number): { seq: number; capNote: string | null } {
  let table: { name: string; rows: number } | undefined;
  for (const c of findEmbeddings(model).candidates) {
    if (c.role === 'position' && c.table.rows !== undefined && (!table || c.table.rows < table.rows)) table = { name: c.table.name, rows: c.table.rows };
  }
  const cap = table ? Math.max(1, Math.floor(table.rows / 2)) : Infinity;
  if (asked <= cap) return { seq: asked, capNote: null };
  return { seq: cap, capNote: `seq ${asked} lowered to ${cap}: position table "${table!.name}" has ${table!.rows} rows, and made-up past and current lengths must both fit it` };
}

function reportNotes(sites: SiteReport[], batch: number, seq: number): string[] {
  const notes = new Set<string>();
  for (const site of sites) {
    for (const input of site.inputs) {
      const odd = input.origin.filter((o) => / \(not the requested|role unknown/.test(o));
      if (odd.length) notes.add(`${input.name} was fed as [${input.dims.join(', ')}] (asked: batch ${batch}, seq ${seq}): ${odd.join('; ')}`);
    }
    for (const skipped of site.notRun) notes.add(`${site.value}: check ${skipped.name} not run: ${skipped.reason}`);
    if (site.newSession?.replayed) notes.add(`${site.value}: ${site.newSession.detail}`);
  }
  return [...notes];
}

function maskPattern(dims: number[]): number[] {
  const [b = 1, l = 1] = dims.length >= 2 ? [dims[0]!, dims.at(-1)!] : [1, dims[0] ?? 1];
  const out: number[] = [];
  for (let r = 0; r < b; r++) {
    const keep = r === 0 ? l : Math.max(1, l - 3 * r); // row 0 full, later rows padded at the end
    for (let i = 0; i < l; i++) out.push(i < keep ? 1 : 0);
  }
  return out;
}

/**
 * Position ids for packed rows ([batch, seq] or [seq]): segments of lengths 5, 3, 1, 4, 7, 2 in
 * turn, each restarting at 0, starting at a different segment per row. Used for verify's feeds.
 */
export function packedPositionIds(dims: number[]): number[] {
  const l = dims.at(-1) ?? 1, b = dims.length >= 2 ? dims[0]! : 1;
  const segments = [5, 3, 1, 4, 7, 2];
  const out: number[] = [];
  for (let r = 0; r < b; r++) {
    let k = r % segments.length, p = 0;
    for (let i = 0; i < l; i++) {
      if (p >= segments[k]!) { p = 0; k = (k + 1) % segments.length; }
      out.push(p++);
    }
  }
  return out;
}

function tensorOf(ort: OrtLike, elem: number, values: number[], dims: number[]): OrtTensorLike {
  switch (elem) {
    case DataType.INT64: return new ort.Tensor('int64', BigInt64Array.from(values, (v) => BigInt(Math.trunc(v))), dims);
    case DataType.INT32: return new ort.Tensor('int32', Int32Array.from(values), dims);
    case DataType.FLOAT: return new ort.Tensor('float32', Float32Array.from(values), dims);
    case DataType.DOUBLE: return new ort.Tensor('float64', Float64Array.from(values), dims);
    case DataType.BOOL: return new ort.Tensor('bool', Uint8Array.from(values, (v) => (v ? 1 : 0)), dims);
    case DataType.UINT8: return new ort.Tensor('uint8', Uint8Array.from(values), dims);
    case DataType.INT8: return new ort.Tensor('int8', Int8Array.from(values), dims);
    case DataType.FLOAT16: return new ort.Tensor('float16', Uint16Array.from(values, (v) => f16(v)), dims);
    default: throw new VerifyError(`Cannot make up a value of type ${dataTypeName(elem)}`);
  }
}

/** Per-element scale s the record promises, from the output shape and the fed mask / position ids. */
function expectedScale(dims: readonly number[], alpha: number, site: PatchedSite, mode: string, feeds: Record<string, OrtTensorLike>): number | Float64Array {
  const d = dims.at(-1)!;
  const l = dims.length >= 2 ? dims.at(-2)! : 1;
  if (mode === 'hf') return alpha / Math.sqrt(l * d);
  const count = dims.reduce((a, b) => a * b, 1);
  const tokens = count / d;
  const mask = site.maskInput && feeds[site.maskInput] ? numbers(feeds[site.maskInput]!) : new Array(tokens).fill(1);
  const scale = new Float64Array(count);
  if (mode === 'mask') {
    for (let t = 0; t < tokens; t++) {
      const row = Math.floor(t / l);
      let len = 0;
      for (let j = 0; j < l; j++) len += mask[row * l + j]!;
      const s = mask[t] ? alpha / Math.sqrt(Math.max(len * d, 1)) : 0;
      scale.fill(s, t * d, (t + 1) * d);
    }
    return scale;
  }
  const positions = numbers(feeds[site.positionIdsInput!]!);
  for (let row = 0; row < tokens / l; row++) {
    const base = row * l;
    const segment: number[] = [];
    let current = -1;
    for (let j = 0; j < l; j++) {
      if (positions[base + j] === 0) current++;
      segment.push(Math.max(current, 0));
    }
    const lengths = new Map<number, number>();
    for (let j = 0; j < l; j++) lengths.set(segment[j]!, (lengths.get(segment[j]!) ?? 0) + mask[base + j]!);
    for (let j = 0; j < l; j++) {
      const s = mask[base + j] ? alpha / Math.sqrt(Math.max(lengths.get(segment[j]!)! * d, 1)) : 0;
      scale.fill(s, (base + j) * d, (base + j + 1) * d);
    }
  }
  return scale;
}

function numbers(t: OrtTensorLike): number[] {
  return Array.from(t.data as ArrayLike<number | bigint>, Number);
}

/** A record keyed by input names: no prototype, so an input named `__proto__` is a key like any other. */
function byName<T>(): Record<string, T> {
  return Object.create(null) as Record<string, T>;
}

/** A run of a session that had already run failed inside ONNX Runtime: the check that ran it fails. */
class RuntimeRunError extends Error {}

async function runOrFail(session: OrtSessionLike, feeds: Record<string, OrtTensorLike>, what: string): Promise<Record<string, OrtTensorLike>> {
  try {
    return await session.run(feeds);
  } catch (error) {
    throw new RuntimeRunError(`ONNX Runtime failed on ${what} after the model had run: ${firstLine(error)}`);
  }
}

/**
 * Runs the stripped model to the site. A model that imported no default-domain opset before the
 * patch gets that import back for the run only (ONNX Runtime refuses a model without it); any
 * other failure to load or run the stripped model fails the check.
 */
async function stripCheck(ctx: Ctx, stripped: Model | string, site: PatchedSite, probe: Probe, feeds: Record<string, OrtTensorLike>, clean: Float32Array): Promise<CheckResult> {
  if (typeof stripped === 'string') return { name: 'strip', ok: false, detail: stripped };
  const copy = stripped.clone();
  const addedOpset = ctx.record.added.opsetImport ? ctx.patchedOpset : undefined;
  if (addedOpset !== undefined && copy.opsetVersion('') === undefined) copy.addOpsetImport('', addedOpset);
  const found = locate(copy, site.graphPath, site.value);
  if (!found) return { name: 'strip', ok: false, detail: `the stripped model has no value ${site.value}` };
  const out = probeOutput(found.graph, found.value, site.dtype);
  let model: Model;
  if (probe.ran === 'whole') {
    if (!found.graph.outputs.includes(out)) { out.info ??= { name: out.name, type: { tensor_type: { elem_type: DataType.FLOAT } } }; found.graph.addOutput(out); }
    model = copy;
  } else {
    const unavailable = ctx.options.unavailable;
    model = extractSlice(copy, found.graph, [out], { asInputs: (v) => !!v.initializer && v.initializer.storage === 'external' && !!unavailable?.(v.name) });
    replaceUnrunnableLookups(model);
    relaxMadeUpTables(model);
  }
  let session: OrtSessionLike;
  let result: Float32Array;
  try {
    session = await ctx.options.ort.InferenceSession.create(encodeModel(model), sessionOptionsOf(ctx));
  } catch (error) {
    return { name: 'strip', ok: false, detail: `ONNX Runtime cannot load the stripped model: ${firstLine(error)}` };
  }
  try {
    const own: Record<string, OrtTensorLike> = byName();
    for (const name of session.inputNames) own[name] = feeds[name]!;
    try {
      result = (await session.run(own))[out.name]!.data as Float32Array;
    } catch (error) {
      return { name: 'strip', ok: false, detail: `ONNX Runtime cannot run the stripped model: ${firstLine(error)}` };
    }
    const differing = result.findIndex((x, i) => !Object.is(x, clean[i]));
    return {
      name: 'strip', ok: differing < 0 && result.length === clean.length,
      detail: differing < 0 ? `the stripped model computes the clean embedding exactly at ${site.value}` : `element ${differing}: stripped ${result[differing]} != clean ${clean[differing]}`,
    };
  } finally {
    await session.release();
  }
}
