// A small ONNX graph builder over `onnx-proto` (the generated protobuf classes), enough to write the
// graphs the CPU backend runs: typed inputs/outputs with symbolic dims, initializers from typed arrays,
// standard and com.microsoft nodes. Graphs are built in memory and handed to onnxruntime-node as bytes.

import onnxProto from 'onnx-proto';

const { onnx } = onnxProto;

export const DT = {
  FLOAT: 1,
  UINT8: 2,
  INT8: 3,
  INT32: 6,
  INT64: 7,
  FLOAT16: 10,
} as const;
export type DataType = (typeof DT)[keyof typeof DT];

/** A dimension: a number, or a symbolic name (dynamic). */
export type Dim = number | string;

/** A float attribute (a plain number is written as INT when it is integral). */
export class F {
  constructor(readonly v: number) {}
}
type AttrValue = number | number[] | string | F;

export class GraphBuilder {
  private nodes: InstanceType<typeof onnx.NodeProto>[] = [];
  private inits: InstanceType<typeof onnx.TensorProto>[] = [];
  private inputs: InstanceType<typeof onnx.ValueInfoProto>[] = [];
  private outputs: InstanceType<typeof onnx.ValueInfoProto>[] = [];
  private n = 0;
  /** Initializer bytes kept out of the protobuf (onnxruntime reads them from memory: no 2 GB limit, no copy into the model bytes). */
  readonly externalData: { path: string; data: Uint8Array }[] = [];

  constructor(readonly name = 'g') {}

  /** A fresh value name. */
  tmp(prefix = 't'): string {
    return `${prefix}_${this.n++}`;
  }

  input(name: string, type: DataType, shape: Dim[]): string {
    this.inputs.push(valueInfo(name, type, shape));
    return name;
  }

  output(name: string, type: DataType, shape: Dim[]): string {
    this.outputs.push(valueInfo(name, type, shape));
    return name;
  }

  /** An initializer (constant) from raw bytes of a typed array; `external` keeps the bytes out of the protobuf. */
  init(name: string, type: DataType, dims: number[], data: ArrayBufferView, external = false): string {
    if (external) {
      const path = `${name}.bin`;
      const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
      this.externalData.push({ path, data: bytes });
      this.inits.push(
        onnx.TensorProto.create({
          name,
          dataType: type,
          dims,
          dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
          externalData: [
            { key: 'location', value: path },
            { key: 'offset', value: '0' },
            { key: 'length', value: String(bytes.byteLength) },
          ],
        }),
      );
      return name;
    }
    this.inits.push(
      onnx.TensorProto.create({
        name,
        dataType: type,
        dims,
        rawData: new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
      }),
    );
    return name;
  }

  /** An int64 constant (shapes, axes). */
  i64(values: number[], name = this.tmp('c')): string {
    return this.init(name, DT.INT64, [values.length], BigInt64Array.from(values.map(BigInt)));
  }

  f32(values: number[] | Float32Array, dims: number[] = [values.length], name = this.tmp('c')): string {
    return this.init(name, DT.FLOAT, dims, Float32Array.from(values));
  }

  /** Adds a node; returns its outputs (`nOut` fresh names unless given). */
  node(op: string, inputs: string[], attrs: Record<string, AttrValue> = {}, opts: { domain?: string; outputs?: string[]; nOut?: number } = {}): string[] {
    const outs = opts.outputs ?? Array.from({ length: opts.nOut ?? 1 }, () => this.tmp(op.toLowerCase()));
    const attribute = Object.entries(attrs).map(([name, v]) => attr(name, v));
    this.nodes.push(onnx.NodeProto.create({ opType: op, input: inputs, output: outs, attribute, domain: opts.domain ?? '', name: this.tmp('n') }));
    return outs;
  }

  /** Shorthand for single-output nodes. */
  op(op: string, inputs: string[], attrs: Record<string, AttrValue> = {}, domain?: string): string {
    return this.node(op, inputs, attrs, { domain })[0];
  }

  /** Encodes the model (opset 17 and com.microsoft 1). */
  build(): Uint8Array {
    const graph = onnx.GraphProto.create({ name: this.name, node: this.nodes, initializer: this.inits, input: this.inputs, output: this.outputs });
    const model = onnx.ModelProto.create({
      irVersion: 8,
      producerName: 'repokv',
      opsetImport: [
        { domain: '', version: 17 },
        { domain: 'com.microsoft', version: 1 },
      ],
      graph,
    });
    return onnx.ModelProto.encode(model).finish();
  }
}

function valueInfo(name: string, elemType: DataType, shape: Dim[]) {
  return onnx.ValueInfoProto.create({
    name,
    type: {
      tensorType: {
        elemType,
        shape: { dim: shape.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) },
      },
    },
  });
}

function attr(name: string, v: AttrValue) {
  const T = onnx.AttributeProto.AttributeType;
  if (v instanceof F) return onnx.AttributeProto.create({ name, type: T.FLOAT, f: v.v });
  if (typeof v === 'number') {
    return Number.isInteger(v) ? onnx.AttributeProto.create({ name, type: T.INT, i: v }) : onnx.AttributeProto.create({ name, type: T.FLOAT, f: v });
  }
  if (typeof v === 'string') return onnx.AttributeProto.create({ name, type: T.STRING, s: new TextEncoder().encode(v) });
  if (Array.isArray(v)) return onnx.AttributeProto.create({ name, type: T.INTS, ints: v });
  throw new Error(`attribute ${name}: unsupported value`);
}
