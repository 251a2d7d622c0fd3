/**
 * The external-data security model, enforced in one place. A TensorProto with data_location =
 * EXTERNAL names a file relative to the model's folder. Such tensors can sit anywhere a tensor
 * can: initializers and sparse initializers (values and indices) of the main graph, of every
 * subgraph (If/Loop/Scan bodies, nested), of function bodies and of training graphs; tensor,
 * tensors, sparse_tensor and sparse_tensors attributes of every node in those graphs; and the
 * attribute defaults of model-local functions. `externalTensorSites` is the one walk over all of
 * them, and every reference goes through the same checks when the model is loaded, before any
 * data file is opened (each one fixed a path-traversal CVE in onnx or ORT):
 *   1. only the keys location, offset, length, checksum; offset and length are plain integers;
 *   2. location not empty, no NUL, not absolute, no `..` segment (even one normalising would cancel);
 *   3. the real path (symlinks resolved) stays inside the model's real folder;
 *   4. the file is a regular file with exactly one hard link;
 *   5. offset + length lies within the file.
 * Checks 2 and 5 run per tensor; 3 and 4 once per distinct file: one lstat when the file is a
 * regular file in the model's real folder (or in a subfolder whose real path, resolved once per
 * subfolder, is where it should be); a link is resolved with realpath and stat.
 * A missing file is not an error here (inspect, patch and strip need no payloads); it is reported.
 *
 * The check records what it saw (real path, device and inode, size). A file is later read only
 * through `openExternalDataFile`, which opens the checked real path once (no following a final
 * symlink, no blocking on a FIFO) and, on that descriptor, requires a regular file with one hard
 * link, the same device, inode and size as at the check, and a real path still inside the model's
 * folder; then reads from that descriptor only. So swapping the file (for a symlink, a FIFO,
 * another file, or a parent folder for a link elsewhere) between the check and the read is refused.
 */
import { closeSync, constants, fstatSync, lstatSync, openSync, readlinkSync, readSync, realpathSync, statSync } from 'node:fs';
import path from 'node:path';
import type { Graph, Model } from '../graph/ir.js';
import type { AttributeProto, GraphProto, SparseTensorProto, TensorProto } from '../graph/proto.js';
import { Tensor } from '../graph/tensor.js';
import { OnnxModelError } from '../graph/errors.js';
import { ExternalDataError, FileAccessError } from './errors.js';

const KNOWN_KEYS = new Set(['location', 'offset', 'length', 'checksum']);

export interface ExternalDataFile {
  /** The location as written in the model (relative, POSIX separators). */
  location: string;
  /** Absolute path on this machine. */
  path: string;
  present: boolean;
  size: number | undefined;
  /** Tensors that reference the file. */
  tensors: string[];
  /** The model's real folder, which the file must stay inside. */
  folder: string;
  /** The file's real path (symlinks resolved) when it was checked; the path it is opened by. */
  realPath: string | undefined;
  /** Device and inode of the file that was checked: a read must find this same file. */
  dev: bigint | undefined;
  ino: bigint | undefined;
}

/** An external tensor and where it sits, for messages. */
export interface ExternalTensorSite {
  tensor: Tensor;
  /** The tensor's name (for sparse tensors, the sparse tensor's), listed in ExternalDataFile.tensors. */
  name: string;
  /** E.g. `sparse initializer "s" (indices) in graph "main" > If "cond".then_branch`. */
  where: string;
}

const isExternal = (t: TensorProto | undefined): t is TensorProto => !!t && t.data_location === 1;

/**
 * Every tensor reference of the model stored externally: initializers, sparse initializers and
 * tensor attributes (single, lists, sparse) of every graph, subgraph, function body, function
 * attribute default and training graph. The one walk the external-data checks use.
 */
export function* externalTensorSites(model: Model): Iterable<ExternalTensorSite> {
  yield* graphSites(model.graph, model.graph.name !== undefined ? `graph "${model.graph.name}"` : 'the main graph');
  for (const fn of model.functions) {
    const scope = `function ${fn.domain ? `${fn.domain}::` : ''}${fn.name}`;
    yield* graphSites(fn.body, scope);
    for (const a of fn.proto.attribute_proto ?? []) yield* attributeSites(a, `default of attribute "${a.name ?? ''}"`, scope);
  }
  for (const [i, t] of model.trainingInfo.entries()) {
    if (t.initialization) yield* graphSites(t.initialization, `training_info[${i}].initialization`);
    if (t.algorithm) yield* graphSites(t.algorithm, `training_info[${i}].algorithm`);
  }
}

/** Every tensor of the model stored externally (see externalTensorSites). */
export function externalTensors(model: Model): Tensor[] {
  return [...externalTensorSites(model)].map((s) => s.tensor);
}

function* graphSites(graph: Graph, scope: string): Iterable<ExternalTensorSite> {
  for (const v of graph.initializers) {
    const t = v.initializer;
    if (t && t.storage === 'external') yield { tensor: t, name: v.name, where: `initializer in ${scope}` };
  }
  for (const v of graph.sparseInitializers) yield* sparseSites(v.sparseInitializer, v.name, 'sparse initializer', scope);
  // Only attributes with tensors or graphs hold external data: a graph kept as bytes builds only those nodes.
  const holders = graph.findNodes({ hasSubgraphs: true }).length ? graph.nodes : graph.findNodes({ hasTensorAttribute: true });
  for (const node of holders) {
    if (!node.attributes.length) continue;
    for (const a of node.attributes) {
      if (holdsTensors(a.proto)) yield* attributeSites(a.proto, `attribute "${a.name}" of ${node.describe()}`, scope);
      for (const [i, g] of a.graphs.entries()) {
        yield* graphSites(g, `${scope} > ${node.describe()}.${a.name}${a.holdsOneGraph ? '' : `[${i}]`}`);
      }
    }
  }
}

function* sparseSites(sparse: SparseTensorProto | undefined, name: string | undefined, what: string, scope: string): Iterable<ExternalTensorSite> {
  if (!sparse) return;
  const label = name ?? sparse.values?.name ?? '(unnamed sparse tensor)';
  for (const part of ['values', 'indices'] as const) {
    const t = sparse[part];
    if (isExternal(t)) yield { tensor: new Tensor(t), name: label, where: `${what} "${label}" (${part}) in ${scope}` };
  }
}

// Most attributes are numbers or strings: no generator is made for them (graphs have millions of nodes).
const holdsTensors = (a: AttributeProto) => !!(a.t || a.tensors?.length || a.sparse_tensor || a.sparse_tensors?.length || a.g || a.graphs?.length);

/** Tensors of one attribute; graphs still in the proto (function attribute defaults) are walked as protos. */
function* attributeSites(a: AttributeProto, what: string, scope: string): Iterable<ExternalTensorSite> {
  const tensors = [...(a.t ? [a.t] : []), ...(a.tensors ?? [])];
  for (const t of tensors) if (isExternal(t)) yield { tensor: new Tensor(t), name: t.name ?? what, where: `${what} in ${scope}` };
  for (const s of [...(a.sparse_tensor ? [a.sparse_tensor] : []), ...(a.sparse_tensors ?? [])]) yield* sparseSites(s, undefined, `${what}, sparse tensor`, scope);
  const graphs = [...(a.g ? [a.g] : []), ...(a.graphs ?? [])];
  for (const g of graphs) yield* graphProtoSites(g, `${scope} > ${what}`);
}

function* graphProtoSites(graph: GraphProto, scope: string): Iterable<ExternalTensorSite> {
  for (const t of graph.initializer ?? []) if (isExternal(t)) yield { tensor: new Tensor(t), name: t.name ?? '(unnamed)', where: `initializer in ${scope}` };
  for (const s of graph.sparse_initializer ?? []) yield* sparseSites(s, undefined, 'sparse initializer', scope);
  for (const node of graph.node ?? []) {
    const owner = `${node.op_type ?? ''}${node.name !== undefined ? ` "${node.name}"` : ''}`;
    for (const a of node.attribute ?? []) yield* attributeSites(a, `attribute "${a.name ?? ''}" of ${owner}`, scope);
  }
}

const isInside = (real: string, folder: string) => real === folder || real.startsWith(folder.endsWith(path.sep) ? folder : folder + path.sep);

/** Checks every external reference of `model` (loaded from `modelDir`); returns the files, present or not. */
export function checkExternalData(model: Model, modelDir: string): ExternalDataFile[] {
  const files = new Map<string, ExternalDataFile>();
  let folder: string;
  try { folder = realpathSync(modelDir); } catch { folder = path.resolve(modelDir); }
  const realFolders = new Map<string, boolean>();
  for (const site of externalTensorSites(model)) {
    const { tensor, name } = site;
    // Built only for a message: the site's description walks the node's names.
    const what = () => `Tensor "${name}" (${site.where})`;
    const ref = (() => {
      try { return tensor.external!; } catch (e) { throw new ExternalDataError(`${what()}: ${(e as OnnxModelError).message}`); }
    })();
    for (const { key } of ref.entries) {
      if (!KNOWN_KEYS.has(key)) throw new ExternalDataError(`${what()}: unknown external_data key "${key}" (allowed: location, offset, length, checksum). The model may have been tampered with; re-export it.`);
    }
    const location = ref.location;
    if (!location) throw new ExternalDataError(`${what()}: external_data location is empty. Re-export the model with its data file.`);
    if (location.includes('\0')) throw new ExternalDataError(`${what()}: external_data location ${JSON.stringify(location)} contains a NUL character. The model may have been tampered with; re-export it.`);
    if (path.isAbsolute(location) || path.win32.isAbsolute(location) || location.startsWith('/') || location.startsWith('\\')) {
      throw new ExternalDataError(`${what()}: external_data location "${location}" is absolute; only paths relative to the model's folder are allowed.`);
    }
    // `..` anywhere, even where normalising would cancel it (`link/../w.bin`): the file system resolves
    // `link` first, so a loader reading the path as written may land elsewhere.
    const slashed = location.replace(/\\/g, '/');
    const normalized = path.posix.normalize(slashed);
    if (slashed.split('/').includes('..')) {
      throw new ExternalDataError(`${what()}: external_data location "${location}" leaves the model's folder ("..").`);
    }
    let entry = files.get(normalized);
    if (!entry) {
      entry = checkDataFile(normalized, path.join(modelDir, normalized), folder, what, realFolders);
      files.set(normalized, entry);
    }
    entry.tensors.push(name);
    if (entry.present) {
      const end = ref.offset + (ref.length ?? 0);
      if (ref.offset > entry.size! || end > entry.size!) {
        throw new ExternalDataError(`${what()}: external data "${location}" offset ${ref.offset} + length ${ref.length ?? 0} = ${end} is beyond the file's ${entry.size} bytes. The data file is truncated or belongs to another model.`);
      }
    }
  }
  return [...files.values()];
}

/** Checks 3 and 4 for one data file, recording what was seen for openExternalDataFile. */
function checkDataFile(location: string, full: string, folder: string, what: () => string, realFolders: Map<string, boolean>): ExternalDataFile {
  const entry: ExternalDataFile = { location, path: full, present: false, size: undefined, tensors: [], folder, realPath: undefined, dev: undefined, ino: undefined };
  let st;
  try { st = lstatSync(full, { bigint: true }); } catch { return entry; }
  let real = path.join(folder, location);
  // A regular file (not a link) in a folder whose real path is where it should be: its lstat is
  // its stat and its path is its real path. Anything else is resolved.
  if (!st.isFile() || !parentIsReal(folder, location, realFolders)) {
    try { real = realpathSync(full); } catch { throw new ExternalDataError(`${what()}: external data "${location}" is a broken link.`); }
    if (!isInside(real, folder)) {
      throw new ExternalDataError(`${what()}: external data "${location}" resolves to ${real}, outside the model's folder ${folder}.`);
    }
    st = statSync(real, { bigint: true });
  }
  if (!st.isFile()) throw new ExternalDataError(`${what()}: external data "${location}" is not a regular file.`);
  if (st.nlink > 1n) {
    throw new ExternalDataError(`${what()}: external data "${location}" has ${st.nlink} hard links; loaders reject multiply-linked data files. Copy it to a file of its own.`);
  }
  return { ...entry, present: true, size: Number(st.size), realPath: real, dev: st.dev, ino: st.ino };
}

/** Whether the folder of `location` (normalized, inside the real `folder`) has no link on the way; resolved once per subfolder. */
function parentIsReal(folder: string, location: string, known: Map<string, boolean>): boolean {
  const sub = path.posix.dirname(location);
  if (sub === '.') return true;
  let real = known.get(sub);
  if (real === undefined) {
    const expected = path.join(folder, sub);
    try { real = realpathSync(expected) === expected; } catch { real = false; }
    known.set(sub, real);
  }
  return real;
}

// O_NOFOLLOW: a final symlink put in place after the check fails to open (ELOOP) instead of being
// followed; O_NONBLOCK: opening a FIFO returns at once (fstat then refuses it) instead of waiting for a writer.
const OPEN_FLAGS = constants.O_RDONLY | (constants.O_NOFOLLOW ?? 0) | (constants.O_NONBLOCK ?? 0);

/** The real path of an open descriptor: Linux names it exactly; elsewhere the path is resolved again. */
function realPathOfDescriptor(fd: number, fallback: string): string {
  try {
    const linked = readlinkSync(`/proc/self/fd/${fd}`);
    if (path.isAbsolute(linked)) return linked;
  } catch { /* no procfs */ }
  return realpathSync(fallback);
}

/**
 * Opens a data file that checkExternalData passed, refusing it unless it is still the file that
 * was checked (see the security model above). Returns the descriptor; the caller closes it and
 * reads through it only.
 */
export function openExternalDataFile(file: ExternalDataFile): number {
  const name = `External data "${file.location}"`;
  const reload = 'Something changed the model\'s folder after the model was loaded; check the folder and run again.';
  if (!file.present || file.realPath === undefined) {
    throw new ExternalDataError(`${name} was missing when the model was loaded, so it cannot be read.`);
  }
  let fd: number;
  try {
    fd = openSync(file.realPath, OPEN_FLAGS);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ELOOP') throw new ExternalDataError(`${name}: ${file.realPath} is now a symbolic link; it was a regular file when checked. ${reload}`);
    if (code === 'ENOENT' || code === 'ENOTDIR') throw new ExternalDataError(`${name}: ${file.realPath} no longer exists. ${reload}`);
    if (code === 'ENXIO') throw new ExternalDataError(`${name}: ${file.realPath} is now a socket or device, not a regular file. ${reload}`);
    throw new FileAccessError(`Cannot open external data ${file.realPath}: ${code ?? (error as Error).message}`, { cause: error });
  }
  try {
    const st = fstatSync(fd, { bigint: true });
    const changed = (what: string) => new ExternalDataError(`${name}: ${file.realPath} ${what} since the model was loaded. ${reload}`);
    if (!st.isFile()) throw changed('is no longer a regular file (it was replaced by a FIFO, device or folder)');
    if (st.dev !== file.dev || st.ino !== file.ino) throw changed(`is another file (device ${st.dev}, inode ${st.ino}; checked: device ${file.dev}, inode ${file.ino})`);
    if (st.nlink !== 1n) throw changed(`has ${st.nlink} hard links (1 when checked)`);
    if (Number(st.size) !== file.size) throw changed(`is ${st.size} bytes (${file.size} when checked)`);
    const real = realPathOfDescriptor(fd, file.realPath);
    if (!isInside(real, file.folder)) throw changed(`now resolves to ${real}, outside the model's folder ${file.folder},`);
    return fd;
  } catch (error) {
    closeSync(fd);
    throw error;
  }
}

/** The whole data file, read through openExternalDataFile's descriptor. */
export function readExternalDataFile(file: ExternalDataFile): Uint8Array {
  const fd = openExternalDataFile(file);
  try {
    const bytes = new Uint8Array(file.size!);
    for (let done = 0; done < bytes.length;) {
      const n = readSync(fd, bytes, done, bytes.length - done, done);
      if (n === 0) throw new ExternalDataError(`External data "${file.location}": ${file.realPath} became shorter while it was read (${done} of ${bytes.length} bytes).`);
      done += n;
    }
    return bytes;
  } finally {
    closeSync(fd);
  }
}
