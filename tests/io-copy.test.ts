import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, ftruncateSync, mkdirSync, openSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { ModelBuilder, Tensor, encodeModel } from '../src/graph/index.js';
import { sameContent } from '../src/io/index.js';
import { runCliJson, tempDir } from './cli-helpers.js';

const root = tempDir('io-copy');
const MiB = 2 ** 20;

/**
 * dir/model.onnx whose token table (1024 x 1024 float, 4 MiB of random bytes) sits at 512 MiB in
 * dir/model.onnx.data, a sparse file of 1 GiB: everything else is a hole.
 */
function sparseModel(dir: string): { file: string; data: string } {
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, 'model.onnx');
  const data = `${file}.data`;
  const b = new ModelBuilder({ opset: 17, irVersion: 8 });
  const table = b.initializer('wte', Tensor.external('float', [1024, 1024], { location: 'model.onnx.data', offset: 512 * MiB, length: 4 * MiB }));
  b.output(b.op('Gather', [table, b.input('input_ids', 'int64', ['batch', 'sequence'])], { axis: 0 }, { name: 'lookup' }), 'float', ['batch', 'sequence', 1024]);
  writeFileSync(file, encodeModel(b.build()));
  const fd = openSync(data, 'w');
  try {
    ftruncateSync(fd, 1024 * MiB);
    writeSync(fd, randomBytes(4 * MiB), 0, 4 * MiB, 512 * MiB);
  } finally { closeSync(fd); }
  return { file, data };
}

test('patch into another folder: a sparse data file (1 GiB, 4 MiB allocated) stays sparse, same bytes, bytes copied reported', { timeout: 120_000 }, () => {
  const { file, data } = sparseModel(path.join(root, 'src'));
  const source = statSync(data);
  assert.ok(source.blocks * 512 <= 8 * MiB, `the test file system keeps holes (${source.blocks * 512} bytes allocated)`);
  const out = path.join(root, 'other', 'model.onnx');
  const r = runCliJson(['patch', file, '-o', out]);
  assert.equal(r.code, 0, r.stdout);
  const copy = statSync(path.join(root, 'other', 'model.onnx.data'));
  assert.equal(copy.size, source.size);
  assert.ok(copy.blocks <= source.blocks, `the copy takes ${copy.blocks * 512} bytes on disk, the source ${source.blocks * 512}`);
  assert.ok(sameContent(data, path.join(root, 'other', 'model.onnx.data')));
  const result = r.json.files[0];
  assert.deepEqual(result.dataCopied, { files: 1, bytes: 1024 * MiB, allocated: copy.blocks * 512 });
  assert.match(result.message, /copied 1 external data file: 1073741824 bytes, \d+ on disk/);
});
