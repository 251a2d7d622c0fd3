/**
 * onnx-neftune for Node: everything in the browser-safe main entry, plus model files on disk
 * (external-data checks, atomic writes) and the ONNX Runtime loader (onnxruntime-node or
 * onnxruntime-web, optional peer dependencies loaded only when verify runs).
 */
export * from './index.js';
export * from './io/index.js';
export * from './runtime/node.js';
