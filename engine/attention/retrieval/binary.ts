// Little-endian byte writer/reader for index files: u32/f64 scalars, JSON, and typed arrays padded to
// 4 bytes. Reads copy typed arrays out (a Buffer from readFileSync need not be aligned) and throw
// `TruncatedError` past the end, so a short file is an error, never a garbage index.

export class TruncatedError extends Error {}

export class ByteWriter {
  private buf = new Uint8Array(1024);
  private view = new DataView(this.buf.buffer);
  length = 0;

  private reserve(n: number): void {
    if (this.length + n <= this.buf.length) return;
    const next = new Uint8Array(Math.max(this.length + n, 2 * this.buf.length));
    next.set(this.buf.subarray(0, this.length));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }

  u32(x: number): void {
    this.reserve(4);
    this.view.setUint32(this.length, x >>> 0, true);
    this.length += 4;
  }

  f64(x: number): void {
    this.reserve(8);
    this.view.setFloat64(this.length, x, true);
    this.length += 8;
  }

  bytes(b: Uint8Array): void {
    this.reserve(b.length);
    this.buf.set(b, this.length);
    this.length += b.length;
  }

  /** Length-prefixed UTF-8 JSON. */
  json(x: unknown): void {
    const b = new TextEncoder().encode(JSON.stringify(x));
    this.u32(b.length);
    this.bytes(b);
    this.pad();
  }

  /** Count-prefixed typed array (element size 1, 2 or 4), padded to 4 bytes. */
  array(a: Float32Array | Int32Array | Uint32Array | Uint16Array | Uint8Array): void {
    this.u32(a.length);
    this.bytes(new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
    this.pad();
  }

  private pad(): void {
    while (this.length % 4) this.bytes(Uint8Array.of(0));
  }

  finish(): Uint8Array {
    return this.buf.slice(0, this.length);
  }
}

export class ByteReader {
  private view: DataView;
  offset = 0;

  private readonly buf: Uint8Array;

  constructor(buf: Uint8Array) {
    // a plain view: Buffer.slice would return views into the file's (pooled) memory, not copies
    this.buf = new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }

  private need(n: number): void {
    if (this.offset + n > this.buf.length) throw new TruncatedError(`index data truncated at byte ${this.offset} (+${n} of ${this.buf.length})`);
  }

  u32(): number {
    this.need(4);
    const x = this.view.getUint32(this.offset, true);
    this.offset += 4;
    return x;
  }

  f64(): number {
    this.need(8);
    const x = this.view.getFloat64(this.offset, true);
    this.offset += 8;
    return x;
  }

  bytes(n: number): Uint8Array {
    this.need(n);
    const b = this.buf.slice(this.offset, this.offset + n);
    this.offset += n;
    return b;
  }

  json<T>(): T {
    const n = this.u32();
    const x = JSON.parse(new TextDecoder().decode(this.bytes(n))) as T;
    this.skipPad();
    return x;
  }

  private skipPad(): void {
    this.offset = Math.min(this.buf.length, (this.offset + 3) & ~3);
  }

  private arr<T>(size: number, make: (b: ArrayBuffer) => T): T {
    const n = this.u32();
    const b = this.bytes(n * size);
    this.skipPad();
    return make(b.buffer as ArrayBuffer);
  }

  f32(): Float32Array {
    return this.arr(4, (b) => new Float32Array(b));
  }
  i32(): Int32Array {
    return this.arr(4, (b) => new Int32Array(b));
  }
  u16(): Uint16Array {
    return this.arr(2, (b) => new Uint16Array(b));
  }
  u8(): Uint8Array {
    return this.arr(1, (b) => new Uint8Array(b));
  }

  done(): boolean {
    return this.offset >= this.buf.length;
  }
}
