export type { ConformanceOptions } from './conformance.js';
export { runConformance } from './conformance.js';
export { delayCalls } from './kit.js';
