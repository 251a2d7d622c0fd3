/**
 * Where one patch of a model file spends its time, in one fresh process: read and decode, the
 * pass, encoding, and writing. Usage: node dist/bench/phases.js model.onnx out.onnx (prints JSON, ms).
 */
import { encodeChecked, readModelFile, saveModelFile } from '../src/io/index.js';
import { applyNeftune } from '../src/passes/index.js';

const [file, out] = process.argv.slice(2) as [string, string];
const t0 = performance.now();
const loaded = readModelFile(file);
const t1 = performance.now();
applyNeftune(loaded.model, {});
const t2 = performance.now();
encodeChecked(loaded.model);
const t3 = performance.now();
await saveModelFile(loaded, out); // encodes again, then writes
const t4 = performance.now();
console.log(JSON.stringify({ 'read+decode': t1 - t0, patch: t2 - t1, encode: t3 - t2, 'save (encode again, write)': t4 - t3 }));
