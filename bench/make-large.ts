import { writeFileSync } from 'node:fs';
import { encodeModel } from '../src/graph/index.js';
import { buildLargeGpt } from './models.js';
const out = process.argv[2]!;
writeFileSync(out, encodeModel(buildLargeGpt()));
