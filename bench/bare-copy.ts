/**
 * The floor for copying a file through Node without a kernel copy: one reused buffer, read then
 * write, until the end. No fsync: neftune's atomic save flushes only when it replaces an existing
 * file, and the bench writes new files (as `cp` does). Usage: node bare-copy.js <from> <to>
 */
import { closeSync, openSync, readSync, writeSync } from 'node:fs';

const [from, to] = process.argv.slice(2) as [string, string];
const buffer = new Uint8Array(4 << 20); // the size of the buffers neftune copies payloads through
const input = openSync(from, 'r');
const output = openSync(to, 'wx', 0o644);
for (let position = 0; ;) {
  const n = readSync(input, buffer, 0, buffer.length, position);
  if (n === 0) break;
  for (let off = 0; off < n;) off += writeSync(output, buffer, off, n - off, position + off);
  position += n;
}
closeSync(output);
closeSync(input);
