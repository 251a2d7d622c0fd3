/**
 * Bounds verify's made-up batch by the memory it would take, before ONNX Runtime is loaded:
 * --seq 100000000 must be refused, not allocated.
 */
import type { LoadedModel } from '../src/io/index.js';
import { findEmbeddings, isPatched, readPatchRecord } from '../src/passes/index.js';
import { UsageError } from './errors.js';

/** Estimated memory above which verify refuses to run. */
export const VERIFY_MEMORY_CAP = 2 ** 30;
/** More runs add little to the moment tests and cost a whole model run each. */
export const MAX_VERIFY_RUNS = 100;

const ELEMENT_BYTES: Record<string, number> = { FLOAT: 4, DOUBLE: 8, FLOAT16: 2, BFLOAT16: 2 };

export interface VerifyEstimate { bytes: number; detail: string }

/**
 * A lower bound of what verify holds for one site (sites are checked one at a time, so the widest
 * counts): batch*seq*dim elements; per run the noise, its scale and tolerance as float64 (24 B),
 * pooled once more for the moment tests (24 B); per run ONNX Runtime's clean, noisy and noise
 * tensors (3 x element size + 3 x 4 B for the float32 draw and probes); the feeds (16 B per token
 * and input). ONNX Runtime's activations for the rest of the model are not counted.
 */
export function estimateVerifyMemory(loaded: LoadedModel, batch: number, seq: number, runs: number): VerifyEstimate | undefined {
  const record = readPatchRecord(loaded.model);
  if (!isPatched(loaded.model) || !record?.sites.length) return undefined; // verify only reports the candidates
  const dims = new Map<string, number>();
  for (const c of findEmbeddings(loaded.model).candidates) if (c.table.dim !== undefined) dims.set(c.table.name, Math.max(c.table.dim, dims.get(c.table.name) ?? 0));
  const tokens = batch * seq;
  const feeds = tokens * loaded.model.graph.inputs.length * 16;
  let worst: VerifyEstimate | undefined;
  for (const site of record.sites) {
    const dim = dims.get(site.table) ?? 1;
    const elementBytes = ELEMENT_BYTES[site.dtype] ?? 4;
    const elements = tokens * dim;
    const bytes = elements * (runs * 48 + 3 * elementBytes + 12) + feeds;
    if (!worst || bytes > worst.bytes) {
      worst = { bytes, detail: `${tokens} tokens x ${dims.has(site.table) ? dim : 'unknown (counted as 1)'}-wide ${site.dtype} embedding at ${site.value}, ${runs} runs` };
    }
  }
  return worst;
}

export function formatBytes(n: number): string {
  if (!Number.isFinite(n)) return 'more than any machine has';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n >= 100 || i === 0 ? n.toFixed(0) : n.toFixed(1)} ${units[i]}`;
}

/** Throws a usage error naming the estimate and the cap when the run would not fit. */
export function checkVerifyBudget(loaded: LoadedModel, batch: number, seq: number, runs: number): void {
  const estimate = estimateVerifyMemory(loaded, batch, seq, runs);
  if (!estimate || estimate.bytes <= VERIFY_MEMORY_CAP) return;
  throw new UsageError(`verify --batch ${batch} --seq ${seq} --runs ${runs} would need about ${formatBytes(estimate.bytes)} of memory ` +
    `(${estimate.detail}; ONNX Runtime's own activations not counted), over the limit of ${formatBytes(VERIFY_MEMORY_CAP)}. Lower --batch, --seq or --runs.`);
}
