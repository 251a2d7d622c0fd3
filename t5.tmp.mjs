import { readModelFile, saveModelFile, encodeChecked } from './dist/src/io/index.js';
import { applyNeftune } from './dist/src/passes/index.js';
let t = performance.now(); const lap = (l) => { const n = performance.now(); console.log(l, (n - t).toFixed(0)); t = n; };
const m = readModelFile(process.argv[2]); lap('read+decode');
applyNeftune(m.model, {}); lap('patch');
const e = encodeChecked(m.model); lap('encode');
await saveModelFile(m, '/tmp/bench/o2.onnx'); lap('encode+write');
