export { Engine, defaultRoot } from "./engine/index.js";
export type { EngineOptions, ImageSummary, RmiResult, DiskUsage, DfImage, DfLayer, CheckReport } from "./engine/index.js";
export { StrataError, isStrataError } from "./errors/index.js";
export type { ErrorCode } from "./errors/index.js";
export { parseReference, formatReference, familiarString } from "./reference/index.js";
export type { Reference } from "./reference/index.js";
export type { Digest } from "./digest/index.js";
export type { Image, Layer } from "./image/index.js";
export * from "./oci/index.js";
