/**
 * A tool's pass over half the nodes of a large graph, the two ways a library user can write it, in
 * one fresh process each: `lazy` asks `findNodes` for one op type (built on demand) then reads each
 * result's uses; `eager` walks the whole list first, then does the same. Building on demand must not
 * cost more than building everything (it once did: each build split a list of segments).
 * Usage: node dist/bench/lazy-walk.js model.onnx lazy|eager opType (prints JSON, ms).
 */
import { readFileSync } from 'node:fs';
import { decodeModel } from '../src/graph/index.js';

const [file, how, opType] = process.argv.slice(2) as [string, 'lazy' | 'eager', string];
const model = decodeModel(new Uint8Array(readFileSync(file)));
const t0 = performance.now();
if (how === 'eager') void [...model.graph];
const found = model.graph.findNodes({ opType });
let uses = 0;
for (const node of found) for (const out of node.outputs) uses += out?.useCount ?? 0;
console.log(JSON.stringify({ ms: performance.now() - t0, nodes: found.length, uses }));
