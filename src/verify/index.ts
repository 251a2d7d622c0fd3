/** Verification of a patch on ONNX Runtime (the runtime module is passed in), and its statistics. */
export { checkUniformNoise, type UniformNoiseCheck, type UniformNoiseOptions } from './stats.js';
export * from './verify.js';
