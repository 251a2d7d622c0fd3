/** What both workers (worker.ts, train-worker.ts) need: ONNX Runtime for the browser, and errors as data the page can put in words. */
import { OnnxNeftuneError } from '../src/graph/index.js';
import type { OrtLike } from '../src/verify/index.js';
import type { WorkerError } from './protocol.js';

export function workerError(error: unknown, step: string): WorkerError {
  if (error instanceof OnnxNeftuneError) {
    const line = (error as { line?: unknown }).line;
    return {
      code: error.code, step, parts: error.text.parts.map((p) => (typeof p === 'string' ? p : { option: p.option })),
      ...(typeof line === 'number' ? { line } : {}),
    };
  }
  // Not one of the library's errors (out of memory, a runtime failure): its first line only, no stack.
  const text = String((error as Error)?.message ?? error).split('\n')[0]!.slice(0, 300);
  return { code: 'UNEXPECTED', step, parts: [text] };
}

export interface Runtime { ort: OrtLike; provider: string; providers: string[] }
let runtime: Promise<Runtime> | undefined;

/** onnxruntime-web, served beside the page under ort/: the WebGPU build when the browser has an adapter, wasm otherwise. */
export function loadRuntime(): Promise<Runtime> {
  return runtime ??= (async () => {
    const gpu = (navigator as Navigator & { gpu?: { requestAdapter(): Promise<unknown> } }).gpu;
    const adapter = gpu ? await gpu.requestAdapter().catch(() => null) : null;
    const base = new URL('ort/', location.href).href;
    // A computed URL, so the bundler leaves the runtime to be fetched at run time.
    const ort = (await import(/* @vite-ignore */ `${base}${adapter ? 'ort.webgpu.min.mjs' : 'ort.wasm.min.mjs'}`)) as OrtLike & { env: { wasm: { numThreads: number; wasmPaths: string } } };
    ort.env.wasm.numThreads = 1; // threads need cross-origin isolation, which a plain server does not give
    ort.env.wasm.wasmPaths = base;
    return adapter ? { ort, provider: 'webgpu', providers: ['webgpu', 'wasm'] } : { ort, provider: 'wasm', providers: ['wasm'] };
  })();
}
