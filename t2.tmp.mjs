import { readModelFile } from './dist/src/io/index.js';
import v8 from 'node:v8'; import fs from 'node:fs';
const m = readModelFile(process.argv[2]); globalThis.keep = m;
const f = v8.writeHeapSnapshot('/tmp/h.heapsnapshot');
const snap = JSON.parse(fs.readFileSync(f));
const fields = snap.snapshot.meta.node_fields; const types = snap.snapshot.meta.node_types[0];
const N = fields.length; const nodes = snap.nodes; const strings = snap.strings;
const agg = new Map();
for (let i = 0; i < nodes.length; i += N) {
  const type = types[nodes[i]]; const name = strings[nodes[i+1]]; const size = nodes[i+3];
  const key = type === 'object' || type === 'closure' ? type + ':' + name : type;
  const a = agg.get(key) || [0,0]; a[0]++; a[1]+=size; agg.set(key, a);
}
console.log([...agg].sort((a,b)=>b[1][1]-a[1][1]).slice(0,25).map(([k,[c,s]])=>`${(s/2**20).toFixed(1)} MB ${c} ${k}`).join('\n'));
