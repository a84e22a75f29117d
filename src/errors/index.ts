/** Stable error codes: callers and the CLI switch on these, never on messages. */
export type ErrorCode =
  | "NOT_FOUND"
  | "ALREADY_EXISTS"
  | "CONFLICT"
  | "DIGEST_MISMATCH"
  | "SIZE_MISMATCH"
  | "INVALID_REFERENCE"
  | "INVALID_DIGEST"
  | "INVALID_MANIFEST"
  | "INVALID_CONFIG"
  | "INVALID_ARCHIVE"
  | "INVALID_ARGUMENT"
  | "UNSUPPORTED"
  | "CORRUPT"
  | "IO"
  | "UNAUTHORIZED"
  | "DENIED"
  | "NETWORK";

export class StrataError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "StrataError";
    this.code = code;
  }
}

export function isStrataError(e: unknown, code?: ErrorCode): e is StrataError {
  return e instanceof StrataError && (code === undefined || e.code === code);
}

/** Wraps a low-level error with a short lowercase context, keeping the cause. */
export function wrap(e: unknown, code: ErrorCode, context: string): StrataError {
  if (e instanceof StrataError) return e;
  const detail = e instanceof Error ? e.message : String(e);
  return new StrataError(code, `${context}: ${detail}`, { cause: e });
}

export function isErrno(e: unknown, code: string): boolean {
  return typeof e === "object" && e !== null && (e as NodeJS.ErrnoException).code === code;
}
