/**
 * Writes a Llama-2-7B shaped model (bench/models.ts buildLlamaShaped) into a folder: model.onnx and
 * its external data as sparse files of the full size (about 27 GB apparent, nothing allocated).
 * Usage: node dist/bench/make-llama.js <folder> [--file-per-tensor]
 */
import { closeSync, ftruncateSync, mkdirSync, openSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { encodeModel } from '../src/graph/index.js';
import { buildLlamaShaped } from './models.js';

export function writeLlamaShaped(folder: string, options: { filePerTensor?: boolean } = {}): { model: string; dataBytes: number; files: number; nodes: number } {
  mkdirSync(folder, { recursive: true });
  const { model, dataBytes, files } = buildLlamaShaped(options);
  const file = path.join(folder, 'model.onnx');
  writeFileSync(file, encodeModel(model));
  for (const [location, size] of files) {
    const fd = openSync(path.join(folder, location), 'w');
    try { ftruncateSync(fd, size); } finally { closeSync(fd); }
  }
  return { model: file, dataBytes, files: files.size, nodes: model.graph.nodeCount };
}

if (process.argv[1]?.endsWith('make-llama.js')) {
  console.log(JSON.stringify(writeLlamaShaped(process.argv[2]!, { filePerTensor: process.argv.includes('--file-per-tensor') })));
}
