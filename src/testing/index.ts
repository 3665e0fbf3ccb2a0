export type { ConformanceOptions } from './conformance.js';
export { runConformance } from './conformance.js';
