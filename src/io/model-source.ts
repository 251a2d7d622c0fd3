/**
 * The model file a lazily loaded model reads its payloads from, held open from load to save.
 * Payloads are read through this descriptor, never by path again: a file renamed over the path
 * after loading cannot lend its bytes to the output. Writing in place over the file the descriptor
 * refers to is the one thing the descriptor cannot survive, so every read and every save checks
 * that the file is still as it was loaded (size and modification time of the open file).
 */
import { closeSync, constants, fstatSync, openSync, readSync, statSync, type BigIntStats } from 'node:fs';
import { FileAccessError, InputChangedError, ModelTooLargeError } from './errors.js';
import { errnoOf } from './fs-facts.js';

/** protobuf's hard limit for one message. */
export const MAX_PROTOBUF_BYTES = 2 ** 31 - 1;

export class ModelSource {
  private fd: number | undefined;
  private readonly seen: BigIntStats;

  private constructor(readonly path: string, fd: number) {
    this.fd = fd;
    this.seen = fstatSync(fd, { bigint: true });
  }

  /**
   * Opens a model file for reading. Non-blocking, so a FIFO cannot stall the open; anything but a
   * regular file, or a file over protobuf's 2 GiB limit, is refused before a byte is read.
   */
  static openModel(file: string): ModelSource {
    let fd: number;
    try {
      fd = openSync(file, constants.O_RDONLY | constants.O_NONBLOCK);
    } catch (error) {
      throw new FileAccessError(`Cannot read ${file}: ${errnoOf(error)}. Check the path and its permissions.`, { cause: error });
    }
    try {
      const source = new ModelSource(file, fd);
      const st = source.seen;
      if (!st.isFile()) {
        throw new FileAccessError(`Cannot read ${file}: it is ${kindOf(st)}, not a regular file. Pass the path of an .onnx model file.`);
      }
      if (st.size > BigInt(MAX_PROTOBUF_BYTES)) {
        throw new ModelTooLargeError(`${file} is ${(Number(st.size) / 2 ** 30).toFixed(2)} GiB; protobuf limits a model file to 2 GiB, so it cannot be an ONNX model file. Models this large keep their weights in external data.`);
      }
      return source;
    } catch (error) {
      closeSync(fd);
      throw error;
    }
  }

  /**
   * Takes over `fd`, a file this process just wrote at `file` (an in-place save): its bytes are
   * what the model now reads.
   */
  static adopt(file: string, fd: number): ModelSource {
    return new ModelSource(file, fd);
  }

  get size(): number { return Number(this.seen.size); }
  get closed(): boolean { return this.fd === undefined; }

  /** True if `st` (a stat of some path) is the file this descriptor holds. */
  isFile(st: { dev: number | bigint; ino: number | bigint }): boolean {
    return BigInt(st.dev) === this.seen.dev && BigInt(st.ino) === this.seen.ino;
  }

  /** True if the path still names the file this descriptor holds. */
  isAtPath(): boolean {
    try { return this.isFile(statSync(this.path, { bigint: true })); } catch { return false; }
  }

  /**
   * Throws unless the open file still has the size and modification time it had when loaded:
   * a file changed in place would give the output a mix of old structure and new bytes.
   */
  checkUnchanged(): void {
    const now = fstatSync(this.descriptor(), { bigint: true });
    if (now.size !== this.seen.size || now.mtimeNs !== this.seen.mtimeNs) {
      throw new InputChangedError(`${this.path} changed since it was loaded (now ${now.size} bytes, modified ${now.mtime.toISOString()}; loaded: ${this.seen.size} bytes, modified ${this.seen.mtime.toISOString()}). Another program wrote into it; nothing was written. Load it again and rerun.`);
    }
  }

  /** Fills `buffer[at, at + length)` from file offset `position`, all of it. */
  readInto(buffer: Uint8Array, at: number, length: number, position: number): void {
    const fd = this.descriptor();
    for (let done = 0; done < length;) {
      const n = readSync(fd, buffer, at + done, length - done, position + done);
      if (n === 0) {
        this.checkUnchanged();
        throw new FileAccessError(`${this.path} ends at byte ${position + done}, before the ${length} bytes wanted at offset ${position}.`);
      }
      done += n;
    }
  }

  /** Up to `length` bytes at `position` (fewer only at the end of the file). */
  readSome(buffer: Uint8Array, at: number, length: number, position: number): number {
    return readSync(this.descriptor(), buffer, at, length, position);
  }

  /** Releases the descriptor; safe to call more than once. */
  close(): void {
    const fd = this.fd;
    this.fd = undefined;
    if (fd !== undefined) closeSync(fd);
  }

  private descriptor(): number {
    if (this.fd === undefined) throw new FileAccessError(`${this.path} was closed (the loaded model was released); load the model again to read its weights.`);
    return this.fd;
  }
}

function kindOf(st: BigIntStats): string {
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO()) return 'a named pipe (FIFO)';
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'a device';
  if (st.isSocket()) return 'a socket';
  return 'a special file';
}
