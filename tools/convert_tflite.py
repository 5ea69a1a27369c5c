"""Convert the MediaPipe selfie-segmentation .tflite models to candle safetensors.

Reads ``selfie_segmentation_landscape.tflite`` and ``selfie_segmentation.tflite``
(default ``<repo>/../shared/models/mediapipe-selfie``) with the ``tflite``
flatbuffer bindings and writes ``models/landscape.safetensors`` and
``models/square.safetensors``.

Every weight in these files is a float16 constant feeding a DEQUANTIZE op. The
float16 values are stored unchanged (same bits), only transposed to the
PyTorch/candle layouts:

* CONV_2D kernel, TFLite OHWI ``[Cout, kH, kW, Cin]`` -> ``[Cout, Cin, kH, kW]``
* DEPTHWISE_CONV_2D kernel ``[1, kH, kW, C]`` -> ``[C, 1, kH, kW]``
* MediaPipe custom op ``Convolution2DTransposeBias`` kernel, OHWI ``[1, 2, 2, 16]``
  (not flipped) -> candle ``conv_transpose2d`` layout ``[Cin=16, Cout=1, 2, 2]``,
  i.e. ``out[2y+dy, 2x+dx] = bias + sum_c in[c, y, x] * W[c, 0, dy, dx]``
* biases ``[C]``

Checks made before anything is written (the script aborts on any failure):

* every DEQUANTIZE reads a float16 constant and its output is consumed exactly
  once, as input 1 (kernel) or 2 (bias) of the op the key table expects;
* every key of the table is found, with the op type it expects, the ops using
  the keys come in the table's (network) order, and each shape matches the
  channels of that op's activations;
* the total parameter count is 106,401;
* both files have the same op sequence, options, dataflow and weight shapes,
  apart from the squeeze-excite global pooling (MEAN over H,W in the landscape
  file, a full-size VALID AVERAGE_POOL_2D in the square one);
* the written file reads back identically with the ``safetensors`` library.

The safetensors files are serialised here (sorted header, no randomness), so a
rerun produces the same bytes. Metadata: ``source_file``, ``source_sha256``,
``converter``, ``preset``, ``input_shape`` (NCHW, e.g. ``"1,3,144,256"``).
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tflite
from safetensors import safe_open

from common import DEFAULT_MODEL_DIR, PRESETS, REPO_ROOT, Preset, sha256_file

EXPECTED_PARAMS = 106_401
CONVERTER = "tools/convert_tflite.py"

CONV, DW, TRANSPOSE = "CONV_2D", "DEPTHWISE_CONV_2D", "CUSTOM:Convolution2DTransposeBias"
OPCODE_NAMES = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}

# The final transposed conv is called "conv2d_transpose" in the landscape file and
# "segment" in the square one; every other tensor name is shared.
FINAL_TFLITE_NAME = {"landscape": "conv2d_transpose", "square": "segment"}


def _conv(i: int) -> str:
    return "conv2d" if i == 0 else f"conv2d_{i}"


def _dw(i: int) -> str:
    return "depthwise_conv2d" if i == 0 else f"depthwise_conv2d_{i}"


def key_table(preset: str) -> dict[str, tuple[str, str]]:
    """candle key -> (TFLite tensor name prefix, op type), in network order."""
    table = {"stem": (_conv(0), CONV)}
    # (expand conv, depthwise, squeeze-excite (reduce, expand) or None, project conv)
    blocks = [
        (1, 0, (2, 3), 4),
        (5, 1, None, 6),
        (7, 2, None, 8),
        (9, 3, (10, 11), 12),
        (13, 4, (14, 15), 16),
        (17, 5, (18, 19), 20),
        (21, 6, (22, 23), 24),
        (25, 7, (26, 27), 28),
    ]
    for b, (expand, dw, se, project) in enumerate(blocks):
        table[f"blocks.{b}.expand"] = (_conv(expand), CONV)
        table[f"blocks.{b}.dw"] = (_dw(dw), DW)
        if se is not None:
            table[f"blocks.{b}.se.reduce"] = (_conv(se[0]), CONV)
            table[f"blocks.{b}.se.expand"] = (_conv(se[1]), CONV)
        table[f"blocks.{b}.project"] = (_conv(project), CONV)
    table["head.conv"] = (_conv(29), CONV)
    table["head.gate"] = (_conv(30), CONV)
    # (proj, gate.reduce, gate.expand, conv, depthwise)
    decoder = [(31, 32, 33, 34, 8), (35, 36, 37, 38, 9), (39, 40, 41, 42, 10)]
    for j, (proj, reduce, expand, conv, dw) in enumerate(decoder):
        table[f"decoder.{j}.proj"] = (_conv(proj), CONV)
        table[f"decoder.{j}.gate.reduce"] = (_conv(reduce), CONV)
        table[f"decoder.{j}.gate.expand"] = (_conv(expand), CONV)
        table[f"decoder.{j}.conv"] = (_conv(conv), CONV)
        table[f"decoder.{j}.dw"] = (_dw(dw), DW)
    table["final"] = (FINAL_TFLITE_NAME[preset], TRANSPOSE)
    return table


class ConversionError(Exception):
    """A check on the source graph failed."""


def check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConversionError(msg)


@dataclass
class Op:
    index: int
    kind: str  # builtin name, or "CUSTOM:<code>"
    inputs: list[int]
    outputs: list[int]
    options: dict = field(default_factory=dict)


@dataclass
class Graph:
    """The parts of a .tflite subgraph the converter needs."""

    names: list[str]
    shapes: list[tuple[int, ...]]
    types: list[int]
    data: list[bytes | None]  # constant data, None for activations
    ops: list[Op]
    inputs: list[int]
    outputs: list[int]

    def producer(self) -> dict[int, int]:
        return {t: op.index for op in self.ops for t in op.outputs}

    def consumers(self) -> dict[int, list[tuple[int, int]]]:
        """tensor -> [(op index, input slot)]."""
        out: dict[int, list[tuple[int, int]]] = {}
        for op in self.ops:
            for slot, t in enumerate(op.inputs):
                if t >= 0:
                    out.setdefault(t, []).append((op.index, slot))
        return out


def _options(kind: str, op) -> dict:
    """Decode the builtin options that define the computation of an op."""
    bo = op.BuiltinOptions()
    if kind in (CONV, DW):
        o = tflite.Conv2DOptions() if kind == CONV else tflite.DepthwiseConv2DOptions()
        o.Init(bo.Bytes, bo.Pos)
        opts = {
            "stride": (o.StrideH(), o.StrideW()),
            "padding": "SAME" if o.Padding() == tflite.Padding.SAME else "VALID",
            "activation": o.FusedActivationFunction(),
            "dilation": (o.DilationHFactor(), o.DilationWFactor()),
        }
        if kind == DW:
            opts["depth_multiplier"] = o.DepthMultiplier()
        return opts
    if kind == "AVERAGE_POOL_2D":
        o = tflite.Pool2DOptions()
        o.Init(bo.Bytes, bo.Pos)
        return {
            "filter": (o.FilterHeight(), o.FilterWidth()),
            "stride": (o.StrideH(), o.StrideW()),
            "padding": "SAME" if o.Padding() == tflite.Padding.SAME else "VALID",
            "activation": o.FusedActivationFunction(),
        }
    if kind in ("ADD", "MUL"):
        o = tflite.AddOptions() if kind == "ADD" else tflite.MulOptions()
        o.Init(bo.Bytes, bo.Pos)
        return {"activation": o.FusedActivationFunction()}
    if kind == "MEAN":
        o = tflite.ReducerOptions()
        o.Init(bo.Bytes, bo.Pos)
        return {"keep_dims": bool(o.KeepDims())}
    if kind == "RESIZE_BILINEAR":
        o = tflite.ResizeBilinearOptions()
        o.Init(bo.Bytes, bo.Pos)
        return {"align_corners": bool(o.AlignCorners()), "half_pixel_centers": bool(o.HalfPixelCenters())}
    if kind.startswith("CUSTOM:"):
        return {"custom_options": bytes(op.CustomOptionsAsNumpy()) if op.CustomOptionsLength() else b""}
    return {}


def read_graph(path: Path) -> Graph:
    """Parse the single subgraph of a .tflite file."""
    buf = path.read_bytes()
    model = tflite.Model.GetRootAsModel(buf, 0)
    check(model.SubgraphsLength() == 1, f"{path}: expected one subgraph")
    g = model.Subgraphs(0)
    names, shapes, types, data = [], [], [], []
    for i in range(g.TensorsLength()):
        t = g.Tensors(i)
        names.append(t.Name().decode())
        shapes.append(tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ())
        types.append(t.Type())
        b = model.Buffers(t.Buffer())
        check(b.Offset() == 0, f"{path}: external buffers are not supported")
        data.append(b.DataAsNumpy().tobytes() if b.DataLength() else None)
    ops = []
    for i in range(g.OperatorsLength()):
        op = g.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        kind = OPCODE_NAMES[builtin]
        if builtin == tflite.BuiltinOperator.CUSTOM:
            kind = "CUSTOM:" + code.CustomCode().decode()
        ops.append(
            Op(
                i,
                kind,
                [int(x) for x in op.InputsAsNumpy()],
                [int(x) for x in op.OutputsAsNumpy()],
                _options(kind, op),
            )
        )
    return Graph(names, shapes, types, data, ops, list(g.InputsAsNumpy()), list(g.OutputsAsNumpy()))


@dataclass
class Extracted:
    """Weights of one file in candle layout, plus what the cross-file check needs."""

    tensors: dict[str, np.ndarray]  # "<key>.weight" / "<key>.bias" -> float16
    weight_of: dict[int, tuple[str, str]]  # DEQUANTIZE output tensor -> (key, "weight"|"bias")
    params: int
    macs: int


def _to_candle(kind: str, kernel: np.ndarray) -> np.ndarray:
    if kind == CONV:  # [Cout, kH, kW, Cin] -> [Cout, Cin, kH, kW]
        return kernel.transpose(0, 3, 1, 2)
    # DW [1, kH, kW, C] -> [C, 1, kH, kW]; TRANSPOSE [Cout=1, 2, 2, Cin] -> [Cin, Cout=1, 2, 2]
    return kernel.transpose(3, 0, 1, 2)


def extract(graph: Graph, preset: Preset) -> Extracted:
    """Collect and check the dequantized weights of one graph (see module docstring)."""
    table = key_table(preset.name)
    by_prefix = {prefix: (key, kind) for key, (prefix, kind) in table.items()}
    consumers = graph.consumers()
    found: dict[str, dict[str, np.ndarray]] = {}
    user_of: dict[str, int] = {}  # key -> index of the op consuming its kernel and bias
    weight_of: dict[int, tuple[str, str]] = {}

    for deq in (op for op in graph.ops if op.kind == "DEQUANTIZE"):
        (src,), (dst,) = deq.inputs, deq.outputs
        check(graph.data[src] is not None, f"DEQUANTIZE {graph.names[src]} does not read a constant")
        check(graph.types[src] == tflite.TensorType.FLOAT16, f"{graph.names[src]} is not float16")
        check(graph.types[dst] == tflite.TensorType.FLOAT32, f"{graph.names[dst]} is not float32")
        uses = consumers.get(dst, [])
        check(len(uses) == 1, f"{graph.names[dst]} is consumed {len(uses)} times, expected once")
        ((user_index, slot),) = uses
        user = graph.ops[user_index]

        prefix, _, suffix = graph.names[src].rpartition("/")
        check(graph.names[dst] == graph.names[src] + "_dequantize", f"unexpected name {graph.names[dst]}")
        check(prefix in by_prefix, f"{graph.names[src]} has no entry in the key table")
        key, kind = by_prefix[prefix]
        role = {"Kernel": "weight", "Bias": "bias"}.get(suffix)
        check(role is not None, f"{graph.names[src]}: neither Kernel nor Bias")
        check(user.kind == kind, f"{key}: used by {user.kind}, expected {kind}")
        check(
            slot == (1 if role == "weight" else 2),
            f"{graph.names[src]} used as input {slot} of op {user_index}",
        )
        check(role not in found.get(key, {}), f"{key}.{role} found twice")
        check(user_of.setdefault(key, user_index) == user_index, f"{key}: kernel and bias feed different ops")

        array = np.frombuffer(graph.data[src], dtype="<f2").reshape(graph.shapes[src])
        found.setdefault(key, {})[role] = array
        weight_of[dst] = (key, role)

    check(set(found) == set(table), f"missing keys: {sorted(set(table) - set(found))}")
    order = [user_of[key] for key in table]
    check(order == sorted(order), "the key table is not in the graph's op order")
    tensors: dict[str, np.ndarray] = {}
    params = macs = 0
    for key, (_, kind) in table.items():
        check(set(found[key]) == {"weight", "bias"}, f"{key}: needs both Kernel and Bias")
        kernel, bias = found[key]["weight"], found[key]["bias"]
        user = graph.ops[user_of[key]]
        x_shape, y_shape = graph.shapes[user.inputs[0]], graph.shapes[user.outputs[0]]
        cin, cout = x_shape[3], y_shape[3]
        if kind == CONV:
            check(
                kernel.shape[0] == cout and kernel.shape[3] == cin,
                f"{key}: kernel {kernel.shape} vs {cin}->{cout}",
            )
            macs += y_shape[1] * y_shape[2] * int(np.prod(kernel.shape))
        elif kind == DW:
            check(
                cin == cout and kernel.shape[0] == 1 and kernel.shape[3] == cin,
                f"{key}: kernel {kernel.shape}",
            )
            check(user.options["depth_multiplier"] == 1, f"{key}: depth multiplier != 1")
            macs += y_shape[1] * y_shape[2] * int(np.prod(kernel.shape))
        else:
            check(kernel.shape == (cout, 2, 2, cin), f"{key}: kernel {kernel.shape} vs {cin}->{cout}")
            check(y_shape[1:3] == (2 * x_shape[1], 2 * x_shape[2]), f"{key}: not a 2x upsampling")
            macs += x_shape[1] * x_shape[2] * int(np.prod(kernel.shape))
        check(bias.shape == (cout,), f"{key}: bias {bias.shape}, expected ({cout},)")
        tensors[f"{key}.weight"] = np.ascontiguousarray(_to_candle(kind, kernel))
        tensors[f"{key}.bias"] = np.ascontiguousarray(bias)
        params += kernel.size + bias.size

    check(params == EXPECTED_PARAMS, f"{params} parameters, expected {EXPECTED_PARAMS}")
    return Extracted(tensors, weight_of, params, macs)


def signature(graph: Graph, ex: Extracted) -> list[tuple]:
    """A size-independent description of every op: type, options, dataflow, weight shapes.

    Global average pooling is normalised to ``GLOBAL_MEAN`` whether it is written as
    MEAN over axes (1, 2) with keep_dims or as a VALID AVERAGE_POOL_2D whose filter
    covers the whole input. The RESIZE_BILINEAR target size must be exactly 2x.
    """
    producer = graph.producer()
    sig = []
    for op in graph.ops:
        if op.kind == "DEQUANTIZE":
            sig.append(("DEQUANTIZE",))
            continue
        kind, opts, inputs = op.kind, dict(op.options), op.inputs
        x_shape = graph.shapes[inputs[0]]
        if kind == "MEAN":
            axes = np.frombuffer(graph.data[inputs[1]], dtype="<i4").tolist()
            check(axes == [1, 2] and opts["keep_dims"], f"op {op.index}: MEAN is not a global pool")
            kind, opts, inputs = "GLOBAL_MEAN", {}, inputs[:1]
        elif kind == "AVERAGE_POOL_2D":
            full = opts["filter"] == x_shape[1:3] and opts["padding"] == "VALID" and opts["activation"] == 0
            check(full, f"op {op.index}: AVERAGE_POOL_2D is not a global pool")
            kind, opts = "GLOBAL_MEAN", {}
        elif kind == "RESIZE_BILINEAR":
            size = np.frombuffer(graph.data[inputs[1]], dtype="<i4").tolist()
            check(size == [2 * x_shape[1], 2 * x_shape[2]], f"op {op.index}: resize is not 2x")
            inputs = inputs[:1]
        described = []
        for t in inputs:
            if t in ex.weight_of:
                key, role = ex.weight_of[t]
                described.append(("weight", key, role, ex.tensors[f"{key}.{role}"].shape))
            elif t in producer:
                described.append(("op", producer[t]))
            else:
                check(t in graph.inputs, f"op {op.index}: unexpected constant {graph.names[t]}")
                described.append(("input",))
        sig.append((kind, tuple(sorted(opts.items())), tuple(described)))
    return sig


def save_safetensors(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
    """Write a safetensors file deterministically (sorted keys, compact JSON).

    ``safetensors.numpy.save_file`` stores ``__metadata__`` in hash-map order, which
    changes from run to run; this writer follows the same format with a fixed order
    (header padded with spaces to a multiple of 8 bytes, as the reference writer does).
    """
    header: dict[str, object] = {"__metadata__": dict(sorted(metadata.items()))}
    offset = 0
    blobs = []
    for name in sorted(tensors):
        array = tensors[name]
        check(array.dtype == np.float16, f"{name}: only float16 is written")
        blob = array.astype("<f2").tobytes()
        header[name] = {
            "dtype": "F16",
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(blob)],
        }
        offset += len(blob)
        blobs.append(blob)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def verify_written(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
    """Read the file back with the safetensors library and compare bit for bit."""
    with safe_open(str(path), framework="numpy") as f:
        check(f.metadata() == metadata, f"{path}: metadata mismatch on read-back")
        check(sorted(f.keys()) == sorted(tensors), f"{path}: key mismatch on read-back")
        for name, array in tensors.items():
            back = f.get_tensor(name)
            check(
                back.dtype == np.float16 and back.shape == array.shape, f"{path}: {name} changed on read-back"
            )
            check(back.tobytes() == array.tobytes(), f"{path}: {name} bits changed on read-back")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--src",
        type=Path,
        default=DEFAULT_MODEL_DIR,
        help="directory holding the two .tflite files (default: %(default)s)",
    )
    parser.add_argument(
        "--out", type=Path, default=REPO_ROOT / "models", help="output directory (default: %(default)s)"
    )
    args = parser.parse_args(argv)

    try:
        converted = {}
        for preset in PRESETS.values():
            src = args.src / preset.tflite_file
            graph = read_graph(src)
            check(graph.shapes[graph.inputs[0]] == (1, preset.height, preset.width, 3), f"{src}: input shape")
            check(
                graph.shapes[graph.outputs[0]] == (1, preset.height, preset.width, 1), f"{src}: output shape"
            )
            ex = extract(graph, preset)
            converted[preset.name] = (src, graph, ex)

        sigs = {name: signature(graph, ex) for name, (_, graph, ex) in converted.items()}
        (a_name, a_sig), (b_name, b_sig) = sigs.items()
        check(len(a_sig) == len(b_sig), f"op count differs: {len(a_sig)} vs {len(b_sig)}")
        for i, (a, b) in enumerate(zip(a_sig, b_sig, strict=True)):
            check(a == b, f"op {i} differs between {a_name} and {b_name}:\n  {a}\n  {b}")

        args.out.mkdir(parents=True, exist_ok=True)
        for name, (src, graph, ex) in converted.items():
            preset = PRESETS[name]
            metadata = {
                "source_file": src.name,
                "source_sha256": sha256_file(src),
                "converter": CONVERTER,
                "preset": name,
                "input_shape": f"1,3,{preset.height},{preset.width}",
            }
            dst = args.out / f"{name}.safetensors"
            save_safetensors(dst, ex.tensors, metadata)
            verify_written(dst, ex.tensors, metadata)
            print(
                f"{name:9s} {src.name} (sha256 {metadata['source_sha256'][:16]}...): {len(graph.ops)} ops, "
                f"{len(ex.tensors)} tensors, {ex.params:,} params, {ex.macs / 1e6:.1f} M MACs "
                f"-> {dst} (sha256 {sha256_file(dst)[:16]}...)"
            )
        print(f"op sequences match ({len(a_sig)} ops; global pooling MEAN vs AVERAGE_POOL_2D normalised)")
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
