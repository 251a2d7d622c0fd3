/**
 * The page's worker: reads, inspects, patches, verifies and strips models off the main thread.
 * Memory: the model file is read once; decoding keeps its tensors as views into those bytes, and
 * large payloads are handed to the encoder as deferred views, so the patched model is written into
 * a Blob piece by piece (no second copy of the weights in this tab). Cancelling terminates the worker.
 */
import protobuf from 'protobufjs/light.js';
import Long from 'long';
import { decodeModel, extractSlice, OnnxNeftuneError, type Model, type Value } from '../src/graph/index.js';
import { dataTypeName } from '../src/graph/dtype.js';
import { encodeModelPieces } from '../src/graph/codec.js';
import { PayloadRegistry, type EncodedPiece } from '../src/graph/deferred.js';
import { applyNeftune, findEmbeddings, isPatched, readPatchRecord, stripNeftune, type NeftuneOptions } from '../src/passes/index.js';
import { verifyNeftune, type VerifyReport } from '../src/verify/index.js';
import type { CandidateRow, DataFileRow, ModelSummary, Reply, Request, WorkerError } from './protocol.js';
import { loadRuntime, workerError } from './worker-shared.js';

// 64-bit integers stay exact, as in Node (where protobufjs finds long by itself).
protobuf.util.Long = Long as unknown as typeof protobuf.util.Long;
protobuf.configure();

interface WorkerScope { postMessage(message: Reply): void; onmessage: ((event: MessageEvent<Request>) => void) | null }
const scope = globalThis as unknown as WorkerScope;

/** Above this size the page verifies the slice from the inputs to each site, not the whole model: ONNX Runtime would need several copies of it. */
export const WHOLE_MODEL_LIMIT = 64 << 20;
/** Payloads at least this large are kept as views and written piece by piece. */
const DEFER_BYTES = 1 << 20;

interface Opened { name: string; file: File; bytes: Uint8Array; data: Map<string, File>; locations: DataFileRow[]; patched: Blob | null }
let current: Opened | undefined;

scope.onmessage = (event) => {
  const request = event.data;
  const step = request.type === 'open' ? 'opening' : request.type === 'patch' ? 'patching' : 'stripping';
  handle(request).then((reply) => scope.postMessage(reply), (error) => scope.postMessage({ type: 'error', error: workerError(error, step) }));
};

async function handle(request: Request): Promise<Reply> {
  switch (request.type) {
    case 'open': return open(request.files);
    case 'patch': return patch(request.options);
    case 'strip': return strip();
  }
}

function progress(step: number, steps: number, text: string): void {
  scope.postMessage({ type: 'progress', step, steps, text });
}

async function open(files: File[]): Promise<Reply> {
  current = undefined;
  const models = files.filter((f) => /\.onnx$/i.test(f.name));
  const model = models.length === 1 ? models[0]! : files.length === 1 ? files[0]! : undefined;
  if (!model) {
    throw new OnnxNeftuneError('USAGE', models.length
      ? `${models.length} .onnx files were given (${models.map((f) => f.name).join(', ')}); open one model at a time, with its data files`
      : `None of the ${files.length} files given is an .onnx model (${files.map((f) => f.name).join(', ')})`);
  }
  progress(1, 2, `Reading ${model.name}`);
  const bytes = new Uint8Array(await model.arrayBuffer());
  progress(2, 2, `Inspecting ${model.name}`);
  const decoded = decodeModel(bytes);
  const data = new Map(files.filter((f) => f !== model).map((f) => [f.name, f]));
  const locations = externalData(decoded, data);
  current = { name: model.name, file: model, bytes, data, locations, patched: null };
  return { type: 'opened', summary: summarize(decoded, model.name, bytes.length, locations) };
}

/** The external-data files the model names, and whether each was given (matched by file name). */
function externalData(model: Model, given: Map<string, File>): DataFileRow[] {
  const rows = new Map<string, DataFileRow>();
  for (const graph of model.allGraphs()) {
    for (const v of graph.initializers) {
      const t = v.initializer;
      if (t?.storage !== 'external') continue;
      const location = t.external!.location;
      const file = given.get(location.split(/[\\/]/).pop()!);
      const row = rows.get(location) ?? { location, tensors: 0, present: !!file, bytes: file?.size ?? null };
      row.tensors++;
      rows.set(location, row);
    }
  }
  return [...rows.values()];
}

const typeText = (v: Value): string => `${v.name}: ${v.elemType !== undefined ? dataTypeName(v.elemType) : '?'}${v.shape ? `[${v.shape.map((d) => d ?? '?').join(', ')}]` : ''}`;

function summarize(model: Model, name: string, bytes: number, locations: DataFileRow[]): ModelSummary {
  const report = findEmbeddings(model);
  const defaults = new Set(report.defaultTarget);
  let nodes = 0;
  for (const g of model.allGraphs()) nodes += g.nodeCount;
  const record = readPatchRecord(model);
  const candidates: CandidateRow[] = report.candidates.map((c) => ({
    node: c.nodeLabel, graphPath: c.graphPath.slice(1), kind: c.kind, table: c.table.name,
    shape: `${c.table.rows ?? '?'} x ${c.table.dim ?? '?'}`, dtype: c.table.dataType !== undefined ? dataTypeName(c.table.dataType) : '?',
    storage: c.table.storage + (c.table.outerScope ? ' (outer scope)' : '') + (c.table.via.length ? ` via ${c.table.via.join(' <- ')}` : ''),
    indices: c.indices.derivation ? `${c.indices.source}: ${c.indices.derivation}` : c.indices.input ? `${c.indices.source}: ${c.indices.input}` : c.indices.source,
    role: c.role + (c.patchable ? '' : c.invalidReason ? ' (invalid)' : c.kind === 'EmbedLayerNormalization' ? ' (fused)' : ' (not patchable)'),
    reasons: [...c.reasons, ...(c.scale ? [`followed by scale Mul ${c.scale.node.name ?? ''}${c.scale.factor !== undefined ? ` (x${c.scale.factor})` : ''}`] : []),
      ...(c.notPatchableReason ? [`not patchable: ${c.notPatchableReason}`] : [])].join('; '),
    patchable: c.patchable, defaultTarget: defaults.has(c),
  }));
  const patchable = report.candidates.filter((c) => c.patchable);
  return {
    name, bytes, irVersion: model.irVersion,
    opsets: model.opsetImports.map((o) => `${o.domain || 'ai.onnx'} ${o.version}`).join(', ') || '(none)',
    producer: [model.producerName, model.proto.producer_version].filter(Boolean).join(' '),
    nodes, inputs: model.graph.inputs.map(typeText), outputs: model.graph.outputs.map(typeText),
    patched: isPatched(model),
    patchText: record ? `alpha ${record.options.alphaInput ? 'from a graph input' : record.options.alpha}, mode ${record.options.mode}${record.options.seed !== undefined ? `, seed ${record.options.seed}` : ''}, ${record.sites.length} site(s): ${record.sites.map((s) => s.value).join(', ')} (onnx-neftune ${record.version})` : null,
    externalData: locations, candidates,
    nearMisses: report.nearMisses.map((n) => `${n.node}${n.graphPath.length > 1 ? ` [${n.graphPath.slice(1).join(' / ')}]` : ''}: ${n.reason}`),
    targetReason: report.targetReason,
    choices: { tables: [...new Set(patchable.map((c) => c.table.name))], nodes: patchable.map((c) => c.nodeLabel) },
  };
}

/** Decodes `bytes` with every large raw payload handed to the encoder as a view (see the header). */
function decodeDeferred(bytes: Uint8Array): Model {
  const model = decodeModel(bytes);
  const registry = new PayloadRegistry(); // this model's payloads, collected with it
  for (const graph of model.allGraphs()) {
    for (const v of graph.initializers) {
      const proto = v.initializer?.proto;
      const raw = proto?.raw_data;
      if (!proto || !raw || raw.length < DEFER_BYTES) continue;
      proto.raw_data = registry.placeholderFor({ length: raw.length, read: () => raw, source: { path: '', offset: 0 } });
    }
  }
  return model;
}

/**
 * The model's bytes as a Blob: pieces that are views into `bytes` (read from `source`) become
 * slices of `source`, which the browser references without copying; only new bytes are copied.
 */
function modelBlob(model: Model, source: Blob, bytes: Uint8Array): Blob {
  const parts = encodeModelPieces(model).pieces.map((p: EncodedPiece): BlobPart => {
    const view = p instanceof Uint8Array ? p : p.read();
    if (view.buffer !== bytes.buffer) return view as Uint8Array<ArrayBuffer>;
    const start = view.byteOffset - bytes.byteOffset;
    return source.slice(start, start + view.length);
  });
  return new Blob(parts, { type: 'application/octet-stream' });
}

function opened(): Opened {
  if (!current) throw new OnnxNeftuneError('USAGE', 'No model is open; drop or pick an .onnx file first');
  return current;
}

async function patch(options: NeftuneOptions): Promise<Reply> {
  const file = opened();
  file.patched = null;
  progress(1, 3, `Patching ${file.name}`);
  const model = decodeDeferred(file.bytes);
  const result = applyNeftune(model, options);
  progress(2, 3, `Writing the patched ${file.name}`);
  const blob = modelBlob(model, file.file, file.bytes);
  file.patched = blob;
  const runtime = await loadRuntime();
  progress(3, 3, `Verifying the noise on ONNX Runtime (${runtime.provider})`);
  const missing = file.locations.filter((d) => !d.present);
  const whole = file.bytes.length <= WHOLE_MODEL_LIMIT && !missing.length;
  // A large model is checked on the slice that computes its sites (the patch record travels with
  // it): verifying it whole would hold several more copies of the weights in this tab.
  const sites = result.record.sites.map((site) => model.graph.value(site.value));
  const checked = !whole && !missing.length && sites.every((v) => v?.producer) ? extractSlice(model, model.graph, sites as Value[]) : model;
  const externalData = await dataBuffers(file);
  const verifyOn = async (provider: string, providers: string[]): Promise<Verified> => {
    try {
      const report = await verifyNeftune(checked, {
        ort: runtime.ort, ep: provider,
        sessionOptions: { executionProviders: providers, externalData },
        unavailable: (name) => missingTensors(model, missing).has(name),
        ...(whole || checked !== model ? {} : {
          wholeModelUnavailable: missing.length ? `external data missing: ${missing.map((d) => d.location).join(', ')}`
            : `the model is larger than ${WHOLE_MODEL_LIMIT >> 20} MB; the page checks the slice from the inputs to each site to keep the tab's memory low`,
        }),
      });
      return { provider, report, error: null };
    } catch (error) {
      return { provider, report: null, error: workerError(error, 'verifying') };
    }
  };
  let verified = await verifyOn(runtime.provider, runtime.providers);
  if (runtime.provider !== 'wasm' && standing(verified, whole) < 2) {
    // WebGPU lacks kernels or features some models need (float16 shaders on many adapters): a
    // failure there says nothing about the noise, so wasm checks it again and the better result stands.
    progress(3, 3, `Verifying the noise again on ONNX Runtime (wasm), as ${runtime.provider} fell short`);
    const onWasm = await verifyOn('wasm', ['wasm']);
    if (standing(onWasm, whole) > standing(verified, whole)) {
      const note = `${runtime.provider} could not ${verified.report?.ok ? 'run the whole model' : 'check the noise'} (${whyNot(verified)}); the noise was checked on wasm instead.`;
      verified = { ...onWasm, report: { ...onWasm.report!, notes: [note, ...onWasm.report!.notes] } };
    }
  }
  let { report } = verified;
  if (report && checked !== model) {
    report = { ...report, ran: 'slice', sliceReason: `the model is larger than ${WHOLE_MODEL_LIMIT >> 20} MB; the page checks the slice from the inputs to each site to keep the tab's memory low` };
  }
  return { type: 'patched', model: blob, warnings: result.warnings, sites: result.record.sites.map((s) => s.value), report, verifyError: verified.error, provider: verified.provider, verifiedWhole: whole };
}

interface Verified { provider: string; report: VerifyReport | null; error: WorkerError | null }

/** 2: passed as fully as this model allows; 1: passed on the slice only where the whole model was to run; 0: not passed. */
function standing({ report }: Verified, whole: boolean): number {
  if (!report?.ok) return 0;
  return whole && report.ran !== 'whole' ? 1 : 2;
}

/** Why a provider's check fell short, from ONNX Runtime's words. */
function whyNot({ report, error }: Verified): string {
  if (error) return error.parts.map((p) => (typeof p === 'string' ? p : p.option)).join('');
  const failed = report?.sites.flatMap((s) => s.checks.filter((c) => !c.ok).map((c) => c.detail)) ?? [];
  return (failed[0] ?? report?.sliceReason ?? 'no reason given').slice(0, 300);
}

function missingTensors(model: Model, missing: DataFileRow[]): Set<string> {
  const places = new Set(missing.map((d) => d.location));
  const names = new Set<string>();
  for (const graph of model.allGraphs()) {
    for (const v of graph.initializers) if (v.initializer?.storage === 'external' && places.has(v.initializer.external!.location)) names.add(v.name);
  }
  return names;
}

async function dataBuffers(file: Opened): Promise<Array<{ path: string; data: Uint8Array }>> {
  const out = [];
  for (const d of file.locations) {
    const given = file.data.get(d.location.split(/[\\/]/).pop()!);
    if (given) out.push({ path: d.location, data: new Uint8Array(await given.arrayBuffer()) });
  }
  return out;
}

async function strip(): Promise<Reply> {
  const file = opened();
  const blob = file.patched ?? file.file;
  const source = file.patched ? new Uint8Array(await file.patched.arrayBuffer()) : file.bytes;
  progress(1, 1, `Stripping ${file.patched ? `the patched ${file.name}` : file.name}`);
  const model = decodeDeferred(source);
  const result = stripNeftune(model);
  if (!result.modified) throw new OnnxNeftuneError('REFUSED', `${file.name} carries no NEFTune patch: there is nothing to strip`);
  return { type: 'stripped', model: modelBlob(model, blob, source), message: result.message };
}
