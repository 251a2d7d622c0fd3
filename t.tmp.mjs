import { readModelFile } from './dist/src/io/index.js';
const t0 = performance.now();
const m = readModelFile(process.argv[2]);
const t1 = performance.now();
globalThis.gc(); const mu = process.memoryUsage();
console.log('load', (t1-t0).toFixed(0), 'ms heapUsed', (mu.heapUsed/2**20).toFixed(0), 'MB rss', (mu.rss/2**20).toFixed(0), 'ext', (mu.external/2**20).toFixed(0), 'ab', (mu.arrayBuffers/2**20).toFixed(0));
globalThis.keep = m;
