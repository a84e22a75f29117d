import { StrataError } from "../errors/index.js";

/**
 * The one whiteout codec. In a layer tar (OCI form) a deleted path `d/x` is
 * an empty file `d/.wh.x`, and a directory whose lower contents are hidden
 * holds `d/.wh..wh..opq`. On an overlay upper directory (overlay form) a
 * deleted path is a 0/0 character device and an opaque directory carries the
 * xattr trusted.overlay.opaque=y.
 */
export const WHITEOUT_PREFIX = ".wh.";
export const OPAQUE_MARKER = ".wh..wh..opq";
export const OVERLAY_OPAQUE_XATTR = "trusted.overlay.opaque";

export type WhiteoutName =
  | { kind: "none" }
  /** `.wh.<target>`: delete the sibling `target` */
  | { kind: "whiteout"; target: string }
  /** `.wh..wh..opq`: hide everything below the directory in lower layers */
  | { kind: "opaque" };

/** Classifies one path component of a layer entry; invalid whiteout names are refused. */
export function parseWhiteout(base: string): WhiteoutName {
  if (!base.startsWith(WHITEOUT_PREFIX)) return { kind: "none" };
  if (base === OPAQUE_MARKER) return { kind: "opaque" };
  const target = base.slice(WHITEOUT_PREFIX.length);
  if (target === "" || target === "." || target === ".." || target.startsWith(WHITEOUT_PREFIX) || target.includes("/"))
    throw new StrataError("INVALID_ARCHIVE", `invalid whiteout name "${base}"`);
  return { kind: "whiteout", target };
}

export function whiteoutName(target: string): string {
  return WHITEOUT_PREFIX + target;
}

/** An overlay whiteout is a character device with device number 0/0. */
export function isOverlayWhiteout(st: { isCharacterDevice(): boolean; rdev: number }): boolean {
  return st.isCharacterDevice() && st.rdev === 0;
}
