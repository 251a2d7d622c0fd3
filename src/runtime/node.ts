/**
 * ONNX Runtime at the edge (Node): loads onnxruntime-node (CPU, CUDA when its binaries are
 * installed) or onnxruntime-web (wasm) on demand, so commands that do not run models never load it.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { OnnxNeftuneError } from '../graph/errors.js';
import type { LoadedModel } from '../io/files.js';
import { readExternalDataFile } from '../io/external-data.js';
import { verifyNeftune, type OrtLike, type VerifyOptions, type VerifyReport } from '../verify/verify.js';

export type ExecutionProvider = 'cpu' | 'cuda' | 'wasm';
export const EXECUTION_PROVIDERS: readonly ExecutionProvider[] = ['cpu', 'cuda', 'wasm'];

/** The requested execution provider cannot be used on this machine. */
export class ProviderUnavailableError extends OnnxNeftuneError {
  constructor(message: string) { super('EP_UNAVAILABLE', message); }
}

export interface Runtime { ort: OrtLike; ep: ExecutionProvider; sessionOptions: Record<string, unknown>; version: string }

/**
 * Loads an ONNX Runtime package through require (both ship CommonJS for Node): unlike import(),
 * that also works in the CLI bundle, which runs from V8's code cache (cli/bin.cts).
 */
function loadPackage(name: 'onnxruntime-node' | 'onnxruntime-web', ep: ExecutionProvider): unknown {
  try {
    return createRequire(import.meta.url)(name);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'MODULE_NOT_FOUND' || !String((error as Error).message).includes(name)) throw error;
    // An optional peer dependency: everything but verify works without it.
    throw new ProviderUnavailableError(`The ${ep} execution provider needs ${name}, which is not installed (it is an optional peer dependency of onnx-neftune). Install it with: npm install ${name}${name === 'onnxruntime-node' ? ' --onnxruntime-node-install=skip' : ''}`);
  }
}

export async function loadRuntime(ep: ExecutionProvider): Promise<Runtime> {
  if (ep === 'wasm') {
    const web = loadPackage('onnxruntime-web', ep) as { default?: OrtLike & { env: { wasm: { numThreads: number } } } };
    const ort = (web.default ?? web) as OrtLike & { env: { wasm: { numThreads: number } } };
    ort.env.wasm.numThreads = 1; // no worker threads: deterministic and quiet in Node
    return { ort, ep, sessionOptions: { executionProviders: ['wasm'] }, version: ort.env.versions?.['web'] ?? 'unknown' };
  }
  const mod = loadPackage('onnxruntime-node', ep) as { default?: OrtLike };
  const ort = (mod.default ?? mod) as OrtLike;
  if (ep === 'cuda') {
    const binDir = path.join(path.dirname(createRequire(import.meta.url).resolve('onnxruntime-node')), '..', 'bin', 'napi-v6', process.platform, process.arch);
    if (!existsSync(path.join(binDir, process.platform === 'win32' ? 'onnxruntime_providers_cuda.dll' : 'libonnxruntime_providers_cuda.so'))) {
      throw new ProviderUnavailableError('The CUDA execution provider is not installed (onnxruntime-node was installed with onnxruntime-node-install=skip). With CUDA 12 and a GPU, install it with: npm install onnxruntime-node --onnxruntime-node-install=cuda12');
    }
  }
  return { ort, ep, sessionOptions: { executionProviders: [ep] }, version: ort.env.versions?.['node'] ?? 'unknown' };
}

/**
 * Verifies a loaded model file on one execution provider. External data is read here, through the
 * descriptor openExternalDataFile checks (the file must still be the one checked at load), and
 * handed to ORT as buffers, so ORT opens no data file itself.
 */
export async function verifyLoadedModel(loaded: LoadedModel, runtime: Runtime, options: Partial<Pick<VerifyOptions, 'batch' | 'seq' | 'runs' | 'falseAlarm' | 'sliceOnly'>> = {}): Promise<VerifyReport> {
  const present = loaded.externalData.filter((f) => f.present);
  const missing = new Set(loaded.externalData.filter((f) => !f.present).flatMap((f) => f.tensors));
  const sessionOptions: Record<string, unknown> = { logSeverityLevel: 4, ...runtime.sessionOptions };
  if (present.length) sessionOptions['externalData'] = present.map((f) => ({ path: f.location, data: readExternalDataFile(f) }));
  const absent = loaded.externalData.filter((f) => !f.present).map((f) => f.location);
  return verifyNeftune(loaded.model, {
    ort: runtime.ort, ep: runtime.ep, sessionOptions, ...options,
    unavailable: (name) => missing.has(name),
    ...(absent.length ? { wholeModelUnavailable: `external data missing: ${absent.join(', ')}` } : {}),
  });
}
