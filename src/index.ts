/**
 * onnx-neftune, browser-safe: the graph library (also `onnx-neftune/graph`), the NEFTune passes
 * (`onnx-neftune/passes`), verification with an ONNX Runtime module you pass in
 * (`onnx-neftune/verify`) and training-step graphs (`onnx-neftune/training`). Files on disk and
 * the runtime loader are in `onnx-neftune/node`.
 */
export * from './graph/index.js';
export * from './passes/index.js';
export * from './verify/index.js';
export * from './training/index.js';
