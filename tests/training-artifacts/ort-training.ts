/**
 * ONNX Runtime's own training runtime in Node: onnxruntime-web 1.19.2's TrainingSession (the last
 * release that has one), installed as the dev dependency `onnxruntime-web-training`. Its exports map
 * blocks `onnxruntime-web/training` under Node, so the CommonJS bundle is required by path.
 * wasm backend, one thread.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { decodeModel, type Model } from '../../src/graph/index.js';
import { DEFAULT_ALPHA_INPUT } from '../../src/passes/index.js';
import { ARTIFACT_FILES } from './build.js';

/** What onnxruntime-web 1.19.2 feeds the optimizer as `learning_rate` (no setter exists in its JS API). */
export const RUNTIME_LEARNING_RATE = 0.001;

type TypedData = Float32Array | BigInt64Array | Int32Array | Uint8Array | Float64Array;

/** A tensor as plain data: what the helpers take as feeds and return as outputs. */
export interface HostTensor {
  type: string;
  data: TypedData;
  dims: readonly number[];
}

// The few parts of onnxruntime-common 1.19.2 these helpers use (its own typings declare the module
// as 'onnxruntime-web', which would clash with the 1.30 package the project depends on).
interface OrtTensor { type: string; data: unknown; dims: readonly number[] }
interface OrtTensorConstructor { new(type: string, data: TypedData, dims: readonly number[]): OrtTensor }
interface OrtTrainingSession {
  readonly trainingInputNames: readonly string[];
  readonly trainingOutputNames: readonly string[];
  readonly evalInputNames: readonly string[];
  readonly evalOutputNames: readonly string[];
  runTrainStep(feeds: Record<string, OrtTensor>): Promise<Record<string, OrtTensor>>;
  runOptimizerStep(): Promise<void>;
  lazyResetGrad(): Promise<void>;
  runEvalStep(feeds: Record<string, OrtTensor>): Promise<Record<string, OrtTensor>>;
  getParametersSize(trainableOnly: boolean): Promise<number>;
  getContiguousParameters(trainableOnly: boolean): Promise<OrtTensor>;
  loadParametersBuffer(buffer: Uint8Array, trainableOnly: boolean): Promise<void>;
  release(): Promise<void>;
}
interface OrtTraining {
  env: { wasm: { numThreads?: number; proxy?: boolean }; logLevel?: string; versions?: Record<string, string> };
  Tensor: OrtTensorConstructor;
  TrainingSession: {
    create(artifacts: { checkpointState: Uint8Array; trainModel: Uint8Array; evalModel?: Uint8Array; optimizerModel?: Uint8Array }, options?: Record<string, unknown>): Promise<OrtTrainingSession>;
  };
}

const PACKAGE = 'onnxruntime-web-training';
const BUNDLE = `${PACKAGE}/dist/ort.training.wasm.min.js`;
const EXPECTED_VERSION = '1.19.2';

let loaded: { ort: OrtTraining } | { error: string } | undefined;
/** The wasm module's memory, captured when the bundle instantiates it (to read C++ exception messages). */
let wasmMemory: WebAssembly.Memory | undefined;

/**
 * Wraps WebAssembly.instantiate until the bundle's module is instantiated, to keep its memory. The
 * bundle keeps its wasm instance private; the memory is the only way to read a C++ exception's text.
 */
function captureWasmMemory(): void {
  const original = WebAssembly.instantiate;
  const wrapped = function (this: unknown, ...args: unknown[]) {
    const imports = args[1] as Record<string, Record<string, unknown>> | undefined;
    for (const ns of Object.values(imports ?? {})) {
      for (const v of Object.values(ns ?? {})) if (v instanceof WebAssembly.Memory) wasmMemory = v;
    }
    if (wasmMemory) WebAssembly.instantiate = original;
    return (original as (...a: unknown[]) => unknown).apply(this, args);
  };
  WebAssembly.instantiate = wrapped as typeof WebAssembly.instantiate;
}

/** The training runtime, or why it cannot be loaded (not installed, wrong version, no TrainingSession). */
export function loadTrainingRuntime(): { ort: OrtTraining } | { error: string } {
  if (loaded) return loaded;
  try {
    const require = createRequire(import.meta.url);
    // The package's main entry (dist/ort.node.min.js) locates dist/; the bundle is required by path.
    const dist = path.dirname(require.resolve(PACKAGE));
    captureWasmMemory();
    const ort = require(path.join(dist, 'ort.training.wasm.min.js')) as OrtTraining;
    const version = ort.env.versions?.['web'];
    if (typeof ort.TrainingSession?.create !== 'function') {
      loaded = { error: `${BUNDLE} (onnxruntime-web ${version ?? '?'}) has no TrainingSession` };
    } else if (version !== EXPECTED_VERSION) {
      loaded = { error: `${BUNDLE} is onnxruntime-web ${version ?? '?'}, expected ${EXPECTED_VERSION}` };
    } else {
      ort.env.wasm.numThreads = 1;
      ort.env.wasm.proxy = false;
      ort.env.logLevel = 'error';
      loaded = { ort };
    }
  } catch (error) {
    loaded = { error: `cannot load ${BUNDLE}: ${(error as Error).message?.split('\n')[0] ?? String(error)}` };
  }
  return loaded;
}

/** For a test's `skip` option: false when the runtime loads, else a message saying why not. */
export function skipWithoutTrainingRuntime(): string | false {
  const r = loadTrainingRuntime();
  return 'error' in r ? `ONNX Runtime training runtime unavailable (${r.error}); run npm ci to install the onnxruntime-web-training dev dependency` : false;
}

function runtime(): OrtTraining {
  const r = loadTrainingRuntime();
  if ('error' in r) throw new Error(`ONNX Runtime training runtime unavailable: ${r.error}`);
  return r.ort;
}

/**
 * The text of a C++ exception thrown by the wasm build, read from its memory. `address` is the
 * exception object; libc++'s std::runtime_error and ORT's OnnxRuntimeException keep their message
 * behind a pointer among their first fields, so the longest printable C string those words point
 * to is the message. A heuristic: returns undefined when nothing plausible is found.
 */
export function cxxExceptionMessage(address: number): string | undefined {
  if (!wasmMemory) return undefined;
  const bytes = new Uint8Array(wasmMemory.buffer);
  const view = new DataView(wasmMemory.buffer);
  const cString = (at: number): string | undefined => {
    let end = at;
    while (end < bytes.length && end - at < 8192 && bytes[end] !== 0) {
      const c = bytes[end]!;
      if ((c < 32 && c !== 9 && c !== 10 && c !== 13) || c > 126) return undefined;
      end++;
    }
    return new TextDecoder().decode(bytes.subarray(at, end));
  };
  let best: string | undefined;
  for (let offset = 0; offset <= 96 && address + offset + 4 <= bytes.length; offset += 4) {
    const pointer = view.getUint32(address + offset, true);
    if (pointer === 0 || pointer >= bytes.length) continue;
    const text = cString(pointer);
    if (text && text.length >= 16 && (!best || text.length > best.length)) best = text;
  }
  return best;
}

/**
 * Errors that reach JS as a bare number are C++ exceptions the wasm build did not turn into a status
 * (the number is the exception object's address): give their message when it can be read, and say
 * which call threw.
 */
export function readableError(error: unknown, during: string): Error {
  if (typeof error === 'number') {
    const message = cxxExceptionMessage(error);
    return new Error(`ONNX Runtime training (wasm ${EXPECTED_VERSION}) threw a C++ exception during ${during}: `
      + (message ?? `its message could not be read (exception object at ${error})`), { cause: error });
  }
  if (error instanceof Error) {
    error.message = `${during}: ${error.message}`;
    return error;
  }
  return new Error(`${during}: ${String(error)}`);
}

async function call<T>(during: string, run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (error) {
    throw readableError(error, during);
  }
}

export interface ParameterSlot {
  name: string;
  dims: number[];
  /** Offset (in elements) in getContiguousParameters' buffer. */
  offset: number;
  size: number;
}

/**
 * Trainable parameters in the order the runtime lays them out in getContiguousParameters: the
 * training model's inputs that have a `<name>_grad.accumulation.buffer` input, in input order.
 */
export function trainableParameters(trainingModel: Model): ParameterSlot[] {
  const inputs = trainingModel.graph.inputs;
  const names = new Set(inputs.map((i) => i.name));
  const slots: ParameterSlot[] = [];
  let offset = 0;
  for (const input of inputs) {
    if (!names.has(`${input.name}_grad.accumulation.buffer`)) continue;
    const dims = (input.info?.type?.tensor_type?.shape?.dim ?? []).map((d) => Number(d.dim_value ?? NaN));
    if (!input.info?.type?.tensor_type?.shape || dims.some((d) => !Number.isInteger(d))) {
      throw new Error(`parameter input ${input.name} has no static shape in the training model`);
    }
    const size = dims.reduce((a, b) => a * b, 1);
    slots.push({ name: input.name, dims, offset, size });
    offset += size;
  }
  return slots;
}

export interface TrainStepOptions {
  /** Required when the training model has the alpha input; refused when it has none. */
  alpha?: number;
}

export interface Training {
  dir: string;
  /** User inputs of the training model as the runtime reports them (parameters, buffers and the reset flag excluded). */
  trainingInputNames: readonly string[];
  /** Outputs the runtime returns (gradient-named outputs excluded). */
  trainingOutputNames: readonly string[];
  evalInputNames: readonly string[];
  evalOutputNames: readonly string[];
  /** The NEFTune alpha input's name when the training model has one. */
  alphaInput: string | undefined;
  parameterSlots: ParameterSlot[];
  /** Forward + backward; gradients accumulate into the runtime's buffers (reset by lazyResetGrad). */
  trainStep(feeds: Record<string, HostTensor>, options?: TrainStepOptions): Promise<Record<string, HostTensor>>;
  /** One optimizer update from the accumulated gradients. */
  optimizerStep(): Promise<void>;
  /** The next trainStep overwrites the gradient buffers instead of adding to them. */
  lazyResetGrad(): Promise<void>;
  /** trainStep, optimizerStep, lazyResetGrad: one plain SGD step. Returns the train step's outputs. */
  step(feeds: Record<string, HostTensor>, options?: TrainStepOptions): Promise<Record<string, HostTensor>>;
  evalStep(feeds: Record<string, HostTensor>): Promise<Record<string, HostTensor>>;
  /** Current trainable parameter values, by name (copies). */
  parameters(): Promise<Record<string, Float32Array>>;
  release(): Promise<void>;
}

export interface OpenTrainingOptions {
  /** Name of the alpha input to look for (default `neftune_alpha`). */
  alphaInput?: string;
}

export const floatTensor = (data: Float32Array | number[], dims: readonly number[]): HostTensor =>
  ({ type: 'float32', data: data instanceof Float32Array ? data : Float32Array.from(data), dims });
export const int64Tensor = (data: BigInt64Array, dims: readonly number[]): HostTensor => ({ type: 'int64', data, dims });

/** Opens the four files of an artifacts folder in one TrainingSession (wasm, single thread). */
export async function openTraining(dir: string, options: OpenTrainingOptions = {}): Promise<Training> {
  const ort = runtime();
  const read = (file: string) => new Uint8Array(readFileSync(path.join(dir, file)));
  const bytes = {
    checkpointState: read(ARTIFACT_FILES.checkpoint),
    trainModel: read(ARTIFACT_FILES.training),
    evalModel: read(ARTIFACT_FILES.eval),
    optimizerModel: read(ARTIFACT_FILES.optimizer),
  };
  const trainingModel = decodeModel(bytes.trainModel);
  const slots = trainableParameters(trainingModel);
  const alphaName = options.alphaInput ?? DEFAULT_ALPHA_INPUT;
  const alphaInput = trainingModel.graph.inputs.some((i) => i.name === alphaName) ? alphaName : undefined;
  const session = await call(`TrainingSession.create(${dir})`, () => ort.TrainingSession.create(bytes, { executionProviders: ['wasm'], logSeverityLevel: 3 }));

  const toOrt = (t: HostTensor) => new ort.Tensor(t.type, t.data, t.dims);
  const fromOrt = (outputs: Record<string, OrtTensor>): Record<string, HostTensor> =>
    Object.fromEntries(Object.entries(outputs).map(([k, v]) => [k, { type: v.type, data: v.data as TypedData, dims: [...v.dims] }]));
  const pick = (names: readonly string[], feeds: Record<string, HostTensor>, model: string) => {
    const missing = names.filter((n) => !feeds[n]);
    if (missing.length) throw new Error(`${model} needs input(s) ${missing.join(', ')}; got ${Object.keys(feeds).join(', ') || 'none'}`);
    return Object.fromEntries(names.map((n) => [n, toOrt(feeds[n]!)]));
  };

  const training: Training = {
    dir,
    trainingInputNames: session.trainingInputNames,
    trainingOutputNames: session.trainingOutputNames,
    evalInputNames: session.evalInputNames,
    evalOutputNames: session.evalOutputNames,
    alphaInput,
    parameterSlots: slots,
    async trainStep(feeds, stepOptions = {}) {
      const all = { ...feeds };
      if (alphaInput !== undefined) {
        if (stepOptions.alpha === undefined) throw new Error(`the training model has the alpha input ${alphaInput}: pass { alpha }`);
        all[alphaInput] = floatTensor([stepOptions.alpha], []);
      } else if (stepOptions.alpha !== undefined) {
        throw new Error(`alpha ${stepOptions.alpha} given, but the training model in ${dir} has no ${alphaName} input`);
      }
      const f = pick(session.trainingInputNames, all, 'the training model');
      return fromOrt(await call('runTrainStep', () => session.runTrainStep(f)));
    },
    optimizerStep: () => call('runOptimizerStep', () => session.runOptimizerStep()),
    lazyResetGrad: () => call('lazyResetGrad', () => session.lazyResetGrad()),
    async step(feeds, stepOptions) {
      const outputs = await training.trainStep(feeds, stepOptions);
      await training.optimizerStep();
      await training.lazyResetGrad();
      return outputs;
    },
    async evalStep(feeds) {
      const f = pick(session.evalInputNames, feeds, 'the eval model');
      return fromOrt(await call('runEvalStep', () => session.runEvalStep(f)));
    },
    async parameters() {
      const flat = await call('getContiguousParameters', () => session.getContiguousParameters(true));
      const data = flat.data as Float32Array;
      const expected = slots.reduce((n, s) => n + s.size, 0);
      if (data.length !== expected) {
        throw new Error(`getContiguousParameters returned ${data.length} values; the training model's trainable inputs (${slots.map((s) => s.name).join(', ')}) hold ${expected}`);
      }
      return Object.fromEntries(slots.map((s) => [s.name, data.slice(s.offset, s.offset + s.size)]));
    },
    release: () => call('release', () => session.release()),
  };
  return training;
}
