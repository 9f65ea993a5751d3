/** A growable list of int32 (token ids), reused to avoid per-call allocation. */
export class IntList {
  data: Int32Array;
  length = 0;
  constructor(capacity = 1024) {
    this.data = new Int32Array(capacity);
  }
  push(v: number): void {
    if (this.length === this.data.length) this.grow(this.length + 1);
    this.data[this.length++] = v;
  }
  pushAll(v: Int32Array): void {
    if (this.length + v.length > this.data.length) this.grow(this.length + v.length);
    this.data.set(v, this.length);
    this.length += v.length;
  }
  private grow(min: number): void {
    let cap = this.data.length * 2;
    while (cap < min) cap *= 2;
    const d = new Int32Array(cap);
    d.set(this.data.subarray(0, this.length));
    this.data = d;
  }
  /** A copy of the contents. */
  toInt32Array(): Int32Array {
    return this.data.slice(0, this.length);
  }
}
