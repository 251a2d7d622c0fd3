/**
 * onnx-neftune, browser-safe: the graph library (also `onnx-neftune/graph`), the NEFTune passes
 * (`onnx-neftune/passes`) and verification with an ONNX Runtime module you pass in
 * (`onnx-neftune/verify`). Files on disk and the runtime loader are in `onnx-neftune/node`.
 */
export * from './graph/index.js';
export * from './passes/index.js';
export * from './verify/index.js';
