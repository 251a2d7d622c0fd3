import type { Model } from './ir.js';
import { Tensor } from './tensor.js';

export interface ExternalizeOptions {
  /** Data file name, relative to the model's folder. */
  location: string;
  /** Tensors with at least this many payload bytes move out (default 1024). */
  threshold?: number;
  /** Offsets are aligned to this many bytes (default 4096, which lets loaders mmap). */
  alignment?: number;
}

/**
 * Moves raw initializer payloads of every graph into one external data file. Returns the file's
 * contents as chunks (padding and payload views, nothing copied); the caller writes them.
 */
export function externalizeInitializers(model: Model, options: ExternalizeOptions): { chunks: Uint8Array[]; bytes: number; tensors: number } {
  const threshold = options.threshold ?? 1024;
  const alignment = options.alignment ?? 4096;
  const chunks: Uint8Array[] = [];
  let offset = 0;
  let tensors = 0;
  for (const graph of model.allGraphs()) {
    for (const v of graph.initializers) {
      const t = v.initializer!;
      if (t.storage !== 'raw' || t.proto.raw_data!.length < threshold) continue;
      const pad = (alignment - (offset % alignment)) % alignment;
      if (pad) { chunks.push(new Uint8Array(pad)); offset += pad; }
      const raw = t.proto.raw_data!;
      chunks.push(raw);
      const ext = Tensor.external(t.dataType, t.dims, { location: options.location, offset, length: raw.length }, v.name);
      for (const k of ['doc_string', 'metadata_props'] as const) if (t.proto[k] !== undefined) (ext.proto as Record<string, unknown>)[k] = t.proto[k];
      v.initializer = ext;
      offset += raw.length;
      tensors++;
    }
  }
  return { chunks, bytes: offset, tensors };
}
