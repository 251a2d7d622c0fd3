/**
 * onnx-neftune: the graph library (browser-safe, also at `onnx-neftune/graph`), the NEFTune
 * passes, and Node file I/O.
 */
export * from './graph/index.js';
export * from './passes/index.js';
export * from './io/index.js';
export * from './verify/index.js';
