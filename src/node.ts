/**
 * onnx-neftune for Node: everything in the browser-safe main entry, plus model files on disk
 * (external-data checks, atomic writes) and the ONNX Runtime loader (onnxruntime-node or
 * onnxruntime-web, optional peer dependencies loaded only when verify runs).
 */
export * from './index.js';
export {
  readModelFile, loadModelBytes, saveModelFile, saveWithExternalData, writeFileAtomic, encodeCheckedBytes, MAX_PROTOBUF_BYTES,
  type LoadedModel, type ReadOptions, type SaveOptions, type SaveResult,
} from './io/files.js';
export { readModelStream } from './io/stream-read.js';
export { checkExternalData, openExternalDataFile, readExternalDataFile, type ExternalDataFile } from './io/external-data.js';
export * from './io/errors.js';
export * from './runtime/node.js';
export { saveCheckpoint, loadCheckpoint, type SaveCheckpointOptions } from './io/checkpoint-files.js';
export { readTokenJsonlFile, readTokenizerFile, readAlpacaFile } from './io/data-files.js';
export { saveFineTuned, withExternalDataRead, type FineTunedSaveResult } from './io/finetuned-files.js';
