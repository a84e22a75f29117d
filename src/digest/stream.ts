import { createHash, type Hash } from "node:crypto";
import { Transform, type TransformCallback } from "node:stream";
import { StrataError } from "../errors/index.js";
import { digestAlgorithm, type Digest } from "./index.js";

/** A pass-through stream that hashes and counts what flows through it. */
export class DigestStream extends Transform {
  private readonly hash: Hash;
  private readonly algorithm: string;
  bytes = 0;
  private result?: Digest;
  constructor(algorithm = "sha256") {
    super();
    this.algorithm = algorithm;
    this.hash = createHash(algorithm);
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    cb(null, chunk);
  }
  override _flush(cb: TransformCallback): void {
    this.result = `${this.algorithm}:${this.hash.digest("hex")}` as Digest;
    cb();
  }
  /** Available once the stream has ended. */
  digest(): Digest {
    if (!this.result) throw new Error("digest read before end of stream");
    return this.result;
  }
}

/**
 * A pass-through stream that fails if more than `size` bytes pass, and at
 * EOF if the byte count or the digest differs from what was expected.
 */
export class VerifyStream extends Transform {
  private readonly hash: Hash;
  private bytes = 0;
  constructor(
    private readonly expected: { digest: Digest; size?: number },
    private readonly what = "blob",
  ) {
    super();
    this.hash = createHash(digestAlgorithm(expected.digest));
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.bytes += chunk.length;
    if (this.expected.size !== undefined && this.bytes > this.expected.size) {
      cb(new StrataError("SIZE_MISMATCH", `${this.what} ${this.expected.digest}: more than the expected ${this.expected.size} bytes`));
      return;
    }
    this.hash.update(chunk);
    cb(null, chunk);
  }
  override _flush(cb: TransformCallback): void {
    if (this.expected.size !== undefined && this.bytes !== this.expected.size) {
      cb(new StrataError("SIZE_MISMATCH", `${this.what} ${this.expected.digest}: got ${this.bytes} bytes, expected ${this.expected.size}`));
      return;
    }
    const got = `${digestAlgorithm(this.expected.digest)}:${this.hash.digest("hex")}`;
    if (got !== this.expected.digest) {
      cb(new StrataError("DIGEST_MISMATCH", `${this.what}: digest mismatch: expected ${this.expected.digest}, got ${got}`));
      return;
    }
    cb();
  }
}
