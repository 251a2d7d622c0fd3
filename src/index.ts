/**
 * onnx-neftune: the graph library (browser-safe, also at `onnx-neftune/graph`), the NEFTune
 * passes, verification, and at the edges Node file I/O and the ONNX Runtime loader (which imports
 * ONNX Runtime only when called).
 */
export * from './graph/index.js';
export * from './passes/index.js';
export * from './io/index.js';
export * from './verify/index.js';
export * from './runtime/node.js';
