/** Tar and compression: one reader/writer for the project. Import the parts directly to keep start-up lean. */
export * from "./compression.js";
export { packDirectory } from "./tar.js";
export * from "./whiteout.js";
