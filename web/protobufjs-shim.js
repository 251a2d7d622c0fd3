// protobufjs ships a UMD build for browsers; index.html loads it as a script (after long.js, so
// 64-bit integers stay exact) and this module hands the global to the ESM code under src/.
export default globalThis.protobuf;
