import { decodeModel, decodeModelProto, modelFromProto, encodeModel } from './dist/src/graph/index.js';
import { applyNeftune } from './dist/src/passes/index.js';
import { readFileSync } from 'node:fs';
const bytes = new Uint8Array(readFileSync(process.argv[2]));
const a = decodeModel(bytes); applyNeftune(a, { seed: 1 });
const b = modelFromProto(decodeModelProto(bytes)); applyNeftune(b, { seed: 1 });
const x = encodeModel(a), y = encodeModel(b);
let i = 0; while (i < x.length && x[i] === y[i]) i++;
console.log(x.length, y.length, i === x.length && x.length === y.length ? 'identical' : 'differ at ' + i);
