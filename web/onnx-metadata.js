// The metadata_props of an ONNX file (docs/model-contract.md, "Metadata"): onnxruntime-web does not expose them,
// and they are a few fields of the file's top-level protobuf message (ModelProto), read here without a library.
// metadataOf(bytes: Uint8Array) -> {key: value}; throws Error for bytes that are not such a message.

const METADATA_PROPS = 14, KEY = 1, VALUE = 2; // onnx.proto: ModelProto.metadata_props, StringStringEntryProto

function* fields(bytes) {
  let at = 0;
  const varint = () => {
    let value = 0, shift = 0, byte;
    do {
      if (at >= bytes.length || shift > 49) throw new Error("not an ONNX file (a truncated number)");
      byte = bytes[at++];
      value += (byte & 0x7f) * 2 ** shift;
      shift += 7;
    } while (byte & 0x80);
    return value;
  };
  while (at < bytes.length) {
    const tag = varint(), number = Math.floor(tag / 8), wire = tag % 8;
    if (wire === 0) yield [number, varint()];
    else if (wire === 1 || wire === 5) at += wire === 1 ? 8 : 4;
    else if (wire === 2) {
      const length = varint();
      if (at + length > bytes.length) throw new Error("not an ONNX file (a field runs past its end)");
      yield [number, bytes.subarray(at, at + length)];
      at += length;
    } else throw new Error(`not an ONNX file (wire type ${wire})`);
  }
}

export function metadataOf(bytes) {
  const text = new TextDecoder("utf-8", { fatal: true }), metadata = {};
  for (const [number, value] of fields(bytes)) {
    if (number !== METADATA_PROPS || !(value instanceof Uint8Array)) continue;
    let key = "", entry = "";
    for (const [part, content] of fields(value)) {
      if (part === KEY) key = text.decode(content);
      if (part === VALUE) entry = text.decode(content);
    }
    metadata[key] = entry;
  }
  return metadata;
}
