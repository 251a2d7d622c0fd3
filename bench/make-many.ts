import { writeFileSync } from 'node:fs';
import { encodeModel } from '../src/graph/index.js';
import { buildManyNodes } from './models.js';
const t0 = performance.now();
const m = buildManyNodes(Number(process.argv[3]));
const t1 = performance.now();
const bytes = encodeModel(m);
writeFileSync(process.argv[2]!, bytes);
console.log(`built ${(t1 - t0).toFixed(0)} ms, encoded ${(performance.now() - t1).toFixed(0)} ms, ${bytes.length} bytes`);
