"""The versioned description of packed layers that kbnn's delegate reads from an exported file.

>>> import keras, kbnn
>>> from kbnn.export import description
>>> model = keras.Sequential([keras.Input((16,)), kbnn.layers.QuantDense(
...     4, kernel_quantizer="ste_sign", use_bias=False)])
>>> tflite = description.with_layout(kbnn.export.to_tflite(model))
>>> description.layout_version(tflite)
1

Layout version 1 is the op pattern `kbnn.export.graph` emits for a packed layer
(words XORed with a run-time zero, bit-cast, bytes gathered from a 256 x 8 table,
reshaped into the kernel of a builtin FULLY_CONNECTED / CONV_2D /
DEPTHWISE_CONV_2D; or XOR-popcount dense layers), with the bit convention of
`kbnn.export.bits`. The delegate (`kbnn/runtime/csrc/delegate.c`) recognises
that pattern; a file may also say which version it was written with in its
metadata entry `LAYOUT_METADATA` (the text "kbnn layout N"). The delegate leaves
every node of a file that names another version to the runtime, and treats a
file without the entry by its patterns alone. Whenever the pattern or the bit
convention changes, LAYOUT_VERSION changes here and in delegate.c together
(tests/test_runtime.py checks that they agree).
"""

__all__ = ["LAYOUT_VERSION", "LAYOUT_METADATA", "with_layout", "layout_version"]

LAYOUT_VERSION = 1
LAYOUT_METADATA = "kbnn_layout"


def with_layout(tflite_bytes, version=LAYOUT_VERSION):
    """`tflite_bytes` with a metadata entry saying which packed layout it uses (replacing
    any earlier one); everything else in the file is kept."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(tflite_bytes), 0)
    text = f"kbnn layout {int(version)}".encode()
    buffer = schema.BufferT()
    buffer.data = list(text)
    model.buffers = list(model.buffers or []) + [buffer]
    entry = schema.MetadataT()
    entry.name = LAYOUT_METADATA
    entry.buffer = len(model.buffers) - 1
    kept = [m for m in (model.metadata or []) if _name(m) != LAYOUT_METADATA]
    model.metadata = kept + [entry]
    builder = flatbuffers.Builder(len(tflite_bytes) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def layout_version(tflite_bytes):
    """The layout version a file declares, or None if it declares none."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(tflite_bytes, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if (entry.Name() or b"").decode() == LAYOUT_METADATA:
            data = model.Buffers(entry.Buffer()).DataAsNumpy()
            text = bytes(data).decode(errors="replace")
            prefix = "kbnn layout "
            if not text.startswith(prefix) or not text[len(prefix):].isdigit():
                raise ValueError(f"Metadata {LAYOUT_METADATA!r} holds {text!r}, not "
                                 f"'kbnn layout N'.")
            return int(text[len(prefix):])
    return None


def _name(entry):
    name = entry.name
    return name.decode() if isinstance(name, bytes) else name
