"""ONNX import and export for the graph IR.

``import_onnx(path_or_model) -> Graph`` reads models written by PyTorch's exporter and
other tools (opset 13 and newer) with static shapes:

* Initializers and ``Constant`` nodes become ``weight`` nodes whose values are stored in
  ``graph.values`` (float32). Graph inputs that are also initializers are weights.
* Constant subgraphs (every node whose inputs are all constants, and ``Shape``/``Size`` of
  a tensor with a static shape) are evaluated at import with onnxruntime, so the
  ``Shape -> Gather -> Unsqueeze -> Concat -> Reshape`` chains of PyTorch's exporter fold
  to constants and the ``Reshape`` becomes an IR ``reshape``.
* Supported operators map to IR ops (see ``_IMPORTERS``). Conv bias is kept as the third
  input of ``conv2d`` (no separate ``add``). Gemm with a constant B folds into ``linear``
  with ``alpha * B`` (transposed at import when ``transB``) and a bias ``beta * C`` when C
  is a vector; otherwise transpose/mul/add ops are inserted. ``ReduceMean`` over H, W of
  a 4-D tensor becomes ``global_avgpool``, other means ``reduce_mean``; ``Gather`` with a
  constant or integer-input index becomes ``gather`` (a 0-d index stays 0-d);
  ``Clip(0, 6)`` becomes ``relu6``; a static unit-step ``Slice`` a ``split`` keeping the
  sliced part; HardSwish, PyTorch's HardSigmoid, Erf, Sqrt,
  Reciprocal, Neg, Pow with a constant exponent and both GELUs have IR ops; a float32 to
  float32 ``Cast`` is dropped. Afterwards :func:`systems_envs.graph.recognize.recognize`
  turns primitive-op GELU / RMSNorm / LayerNorm subgraphs into one op.
* Graph inputs keep their element type (``input`` attribute ``dtype``, e.g. int64 token
  ids); the IR computes in float, so integer tensors carry integral float values.
  ``graph.source`` keeps the file's opsets, output names and types and model functions.
* Anything else (including float ops on non-float32 tensors) becomes an ``opaque`` node:
  ``op_type``, ``output_shapes`` (ONNX shape inference, else a probe run), the serialized
  ``NodeProto`` in ``onnx_node``, and in ``attributes`` a hashable description:
  ``(("attrs", ...), ("domain", d), ("opset", v), ("inputs", slots), ("out_types", ...))``
  where each input slot is ``("graph", k, elem_type)`` (the k-th IR input, cast to
  ``elem_type`` before running), ``("const", dtype, shape, raw bytes)`` (a non-float32
  constant baked into the node, e.g. int64 indices) or ``("absent",)``.
  :func:`run_onnx_node` runs such a node with onnxruntime.

``export_onnx(graph, path=None, opset=None) -> ModelProto`` writes every IR op as ONNX ops
that onnxruntime runs, keeping the source interface (names, element types, shapes) and
opset, with every constant written as an initializer (known values, else the executor's
deterministic fill with seed 0), so the exported model computes what
:func:`systems_envs.graph.executor.execute` computes, and a squeeze-and-excitation gate's
broadcast ``Mul`` written so that onnxruntime keeps it in its NCHWc layout where it can;
see :func:`export_onnx`. Opaque
nodes are re-emitted from their stored NodeProto with their original input and output
element types.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from systems_envs.graph.ir import Graph, GraphError, Node, SourceModel, TensorRef
from systems_envs.graph.recognize import recognize

FLOAT = TensorProto.FLOAT
IR_VERSION = 10  # ONNX IR version of models we build (onnxruntime 1.32 runs it; opsets <= 21)
_NEVER_FOLD = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
               "Bernoulli", "If", "Loop", "Scan"}


# ============================================================================ helpers


def _load_model(src: str | Path | onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    if isinstance(src, onnx.ModelProto):
        return src, src.graph.name or "onnx model"
    path = Path(src)
    if not path.is_file():
        raise GraphError(f"{str(path)!r}: no such ONNX file")
    try:
        model = onnx.load(str(path))
    except Exception as e:  # protobuf DecodeError and friends
        raise GraphError(f"{str(path)!r}: not a readable ONNX model ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else 'corrupt or truncated'})") from None
    if not model.graph.node and not model.graph.output:
        raise GraphError(f"{str(path)!r}: ONNX model has no graph (corrupt or truncated file?)")
    return model, str(path)


def _freeze_attr(a: onnx.AttributeProto) -> Any:
    """Hashable value of an ONNX attribute."""
    v = helper.get_attribute_value(a)
    if isinstance(v, TensorProto):
        arr = numpy_helper.to_array(v)
        return ("tensor", str(arr.dtype), arr.shape, arr.tobytes())
    if isinstance(v, (onnx.GraphProto, onnx.SparseTensorProto, onnx.TypeProto)):
        return ("proto", v.SerializeToString())
    if isinstance(v, list):
        return tuple(_freeze_attr_item(x) for x in v)
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return v


def _freeze_attr_item(x: Any) -> Any:
    if isinstance(x, TensorProto):
        arr = numpy_helper.to_array(x)
        return ("tensor", str(arr.dtype), arr.shape, arr.tobytes())
    if hasattr(x, "SerializeToString"):
        return ("proto", x.SerializeToString())
    if isinstance(x, bytes):
        return x.decode("utf-8", "replace")
    return x


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _np_to_elem(dtype: np.dtype) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def run_single_node(node: onnx.NodeProto, opsets: Sequence[tuple[str, int]], inputs: Sequence[np.ndarray | None],
                    session_cache: dict | None = None, key: Any = None) -> list[np.ndarray]:
    """Run one ONNX node with onnxruntime on typed NumPy inputs (None = absent optional input)."""
    import onnxruntime as ort

    sess = None if session_cache is None else session_cache.get(key)
    names = [f"in{k}" if x is not None else "" for k, x in enumerate(inputs)]
    if sess is None:
        n = onnx.NodeProto()
        n.CopyFrom(node)
        del n.input[:]
        n.input.extend(names)
        del n.output[:]
        outs = [f"out{i}" if o else "" for i, o in enumerate(node.output)]
        n.output.extend(outs)
        g_in = [helper.make_tensor_value_info(nm, _np_to_elem(x.dtype), list(x.shape))
                for nm, x in zip(names, inputs) if x is not None]
        g_out = [onnx.ValueInfoProto(name=o) for o in outs if o]
        g = helper.make_graph([n], "single_node", g_in, g_out)
        model = helper.make_model(g, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])
        model.ir_version = IR_VERSION
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.log_severity_level = 3
        sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        if session_cache is not None:
            session_cache[key] = sess
    feed = {nm: x for nm, x in zip(names, inputs) if x is not None}
    return sess.run(None, feed)


def _opaque_spec(node: Node) -> dict[str, Any]:
    return dict(node.attrs["attributes"])


_SESSIONS: dict[Any, Any] = {}


def run_onnx_node(node: Node, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Run an imported ``opaque`` node with onnxruntime (session cached per signature).

    ``inputs`` are the IR inputs (float arrays); they are cast to the element types the
    node expects, baked constants are added, and outputs come back as NumPy arrays.
    """
    spec = _opaque_spec(node)
    blob = node.attrs["onnx_node"]
    proto = onnx.NodeProto.FromString(blob)
    args: list[np.ndarray | None] = []
    for slot in spec["inputs"]:
        if slot[0] == "graph":
            args.append(np.asarray(inputs[slot[1]]).astype(helper.tensor_dtype_to_np_dtype(slot[2])))
        elif slot[0] == "const":
            _, dtype, shape, raw = slot
            args.append(np.frombuffer(raw, dtype=np.dtype(dtype)).reshape(shape))
        else:
            args.append(None)
    opsets = [(spec["domain"], spec["opset"])]
    if spec["domain"] not in ("", "ai.onnx"):
        opsets.append(("", spec.get("default_opset", 17)))
    key = (blob, node.attr_key(), tuple(None if a is None else (a.shape, str(a.dtype)) for a in args))
    try:
        outs = run_single_node(proto, opsets, args, _SESSIONS, key)
    except Exception as e:
        raise GraphError(f"node {node.name!r}: onnxruntime failed to run opaque op "
                         f"{node.attrs['op_type']!r}: {str(e).splitlines()[0]}") from None
    return [np.asarray(o) for o in outs]


# ============================================================================ import


class _Importer:
    def __init__(self, model: onnx.ModelProto, label: str):
        self.label = label
        self.model = model
        self.opset = 0
        self.opsets: dict[str, int] = {}
        for o in model.opset_import:
            dom = "" if o.domain == "ai.onnx" else o.domain
            self.opsets[dom] = o.version
        self.opset = self.opsets.get("", 0)
        if self.opset and self.opset < 13:
            raise GraphError(f"{label!r}: opset {self.opset} is older than the supported 13")
        try:
            inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
        except Exception:
            inferred = model
        self.shapes: dict[str, tuple | None] = {}
        self.types: dict[str, int] = {}
        gi = inferred.graph
        for vi in list(gi.value_info) + list(gi.input) + list(gi.output):
            t = vi.type.tensor_type
            if not vi.type.HasField("tensor_type"):
                continue
            self.types[vi.name] = t.elem_type
            if t.HasField("shape") and all(d.HasField("dim_value") for d in t.shape.dim):
                self.shapes[vi.name] = tuple(d.dim_value for d in t.shape.dim)
        self.g = Graph(model.graph.name or "onnx")
        self.env: dict[str, TensorRef] = {}  # onnx tensor name -> IR tensor
        self.consts: dict[str, np.ndarray] = {}  # onnx tensor name -> known value (any dtype)
        self._weight_of: dict[str, TensorRef] = {}

    # --------------------------------------------------------------- tensors
    def fresh_name(self, base: str) -> str:
        name, k = base, 1
        while name in self.g._names:
            name = f"{base}~{k}"
            k += 1
        return name

    def const_weight(self, value: np.ndarray, base: str) -> TensorRef:
        value = np.asarray(value, dtype=np.float32)
        nid = self.g.weight(self.fresh_name(base), value.shape, value=value)
        return (nid, 0)

    def ref(self, name: str) -> TensorRef:
        """IR tensor for an ONNX tensor (constants become weights on first use)."""
        if name in self.env:
            return self.env[name]
        if name in self._weight_of:
            return self._weight_of[name]
        if name in self.consts:
            r = self.const_weight(self.consts[name], name)
            self._weight_of[name] = r
            return r
        raise GraphError(f"{self.label!r}: tensor {name!r} is used before it is produced")

    def shape_of(self, name: str) -> tuple:
        if name in self.env:
            return self.g.shape(self.env[name])
        if name in self.consts:
            return tuple(self.consts[name].shape)
        s = self.shapes.get(name)
        if s is None:
            raise GraphError(f"{self.label!r}: tensor {name!r} has an unknown shape")
        return s

    def is_float(self, name: str) -> bool:
        if name in self.consts:
            return self.consts[name].dtype == np.float32
        return self.types.get(name, FLOAT) == FLOAT

    # --------------------------------------------------------------- driver
    def run(self) -> Graph:
        gp = self.model.graph
        for init in gp.initializer:
            self.consts[init.name] = numpy_helper.to_array(init)
        for vi in gp.input:
            if vi.name in self.consts:
                continue
            tt = vi.type.tensor_type
            dims = []
            for d in tt.shape.dim:
                if not d.HasField("dim_value") or d.dim_value < 1:
                    sym = d.dim_param or "?"
                    raise GraphError(f"{self.label!r}: input {vi.name!r} has a dynamic dimension {sym!r}; "
                                     "only static shapes are supported")
                dims.append(d.dim_value)
            if not tt.HasField("shape"):
                raise GraphError(f"{self.label!r}: input {vi.name!r} has no shape; only static shapes are supported")
            try:
                dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type))
            except Exception:
                raise GraphError(f"{self.label!r}: input {vi.name!r} has an unsupported element type "
                                 f"{tt.elem_type}") from None
            if dtype.kind not in "fiub":
                raise GraphError(f"{self.label!r}: input {vi.name!r} has element type {dtype}; only numeric "
                                 "and boolean inputs are supported")
            self.env[vi.name] = (self.g.add("input", name=vi.name, shape=tuple(dims), dtype=dtype.name), 0)
        for node in gp.node:
            label = node.name or f"{node.op_type}({', '.join(node.output)})"
            try:
                if self.foldable(node):
                    self.fold(node)
                    continue
                fn = _IMPORTERS.get(node.op_type) if node.domain in ("", "ai.onnx") else None
                done = False
                if fn is not None and all(self.is_float(o) for o in node.output if o):
                    done = fn(self, node, _attrs(node)) is not False
                if not done:
                    self.opaque(node)
            except GraphError as e:
                msg = str(e)
                raise GraphError(msg if msg.startswith(f"{self.label!r}") else
                                 f"{self.label!r}: node {label!r} ({node.op_type}): {msg}") from None
        outs = []
        for vi in gp.output:
            outs.append(self.ref(vi.name))
        self.g.set_outputs(outs)
        self.g.source = SourceModel(
            opsets=tuple(sorted(self.opsets.items())),
            outputs=tuple((vi.name, int(vi.type.tensor_type.elem_type) or FLOAT) for vi in gp.output),
            functions=tuple(f.SerializeToString() for f in self.model.functions))
        self.g.prune(keep_sources=True)  # drop dead compute nodes, keep every declared input
        recognize(self.g)
        return self.g

    # --------------------------------------------------------------- folding
    def foldable(self, node: onnx.NodeProto) -> bool:
        if node.op_type in _NEVER_FOLD or node.domain not in ("", "ai.onnx"):
            return False
        if node.op_type == "Constant":
            return True
        if node.op_type in ("Shape", "Size"):
            return node.input[0] in self.consts or self._static_shape(node.input[0]) is not None
        ins = [i for i in node.input if i]
        return bool(ins) and all(i in self.consts for i in ins)

    def _static_shape(self, name: str) -> tuple | None:
        if name in self.env:
            return self.g.shape(self.env[name])
        return self.shapes.get(name)

    def fold(self, node: onnx.NodeProto) -> None:
        a = _attrs(node)
        if node.op_type == "Constant" and "value" in a:
            self.consts[node.output[0]] = numpy_helper.to_array(a["value"])
            return
        if node.op_type in ("Shape", "Size") and node.input[0] not in self.consts:
            shape = self._static_shape(node.input[0])
            dummy = np.zeros(shape, dtype=np.float32)
            args: list = [dummy]
        else:
            args = [self.consts[i] if i else None for i in node.input]
        outs = run_single_node(node, [(d or "", v) for d, v in self.opsets.items()] or [("", 17)], args)
        for name, val in zip(node.output, outs):
            if name:
                self.consts[name] = np.asarray(val)

    # --------------------------------------------------------------- opaque
    def opaque(self, node: onnx.NodeProto) -> None:
        ir_inputs: list[TensorRef] = []
        slots: list[tuple] = []
        for name in node.input:
            if not name:
                slots.append(("absent",))
            elif name in self.consts and self.consts[name].dtype != np.float32:
                v = np.asarray(self.consts[name])  # (not ascontiguousarray: it turns a 0-d index into 1-d)
                slots.append(("const", str(v.dtype), tuple(v.shape), v.tobytes()))
            else:
                etype = FLOAT if name in self.consts else self.types.get(name, FLOAT)
                slots.append(("graph", len(ir_inputs), int(etype)))
                ir_inputs.append(self.ref(name))
        outs = [o for o in node.output]
        shapes = [self.shapes.get(o) if o else () for o in outs]
        out_types = [int(self.types.get(o, 0)) for o in outs]
        if any(s is None for s in shapes) or any(t == 0 for o, t in zip(outs, out_types) if o):
            probe = self._probe(node, slots, ir_inputs)
            shapes = [tuple(p.shape) for p in probe]
            out_types = [_np_to_elem(p.dtype) for p in probe]
        domain = "" if node.domain == "ai.onnx" else node.domain
        spec = (
            ("attrs", tuple(sorted((a.name, _freeze_attr(a)) for a in node.attribute))),
            ("domain", domain),
            ("opset", int(self.opsets.get(domain, self.opset or 17))),
            ("default_opset", int(self.opset or 17)),
            ("inputs", tuple(slots)),
            ("out_types", tuple(out_types)),
        )
        clean = onnx.NodeProto()
        clean.CopyFrom(node)
        nid = self.g.add("opaque", ir_inputs, op_type=node.op_type, output_shapes=tuple(shapes),
                         attributes=spec, onnx_node=clean.SerializeToString())
        for i, o in enumerate(outs):
            if o:
                self.env[o] = (nid, i)

    def _probe(self, node: onnx.NodeProto, slots, ir_inputs) -> list[np.ndarray]:
        """Run the node once on deterministic data to learn output shapes/types."""
        rng = np.random.default_rng(0)
        args = []
        for s in slots:
            if s[0] == "graph":
                shp = self.g.shape(ir_inputs[s[1]])
                args.append(rng.standard_normal(shp).astype(helper.tensor_dtype_to_np_dtype(s[2])))
            elif s[0] == "const":
                args.append(np.frombuffer(s[3], dtype=np.dtype(s[1])).reshape(s[2]))
            else:
                args.append(None)
        try:
            return run_single_node(node, [(d or "", v) for d, v in self.opsets.items()] or [("", 17)], args)
        except Exception as e:
            raise GraphError(f"cannot infer output shapes of unsupported op {node.op_type!r}: "
                             f"{str(e).splitlines()[0]}") from None

    # --------------------------------------------------------------- emit helpers
    def emit(self, node: onnx.NodeProto, op: str, inputs: Sequence[TensorRef], **attrs) -> int:
        nid = self.g.add(op, inputs, **attrs)
        for i, o in enumerate(node.output):
            if o:
                self.env[o] = (nid, i)
        return nid

    def const_ints(self, node: onnx.NodeProto, idx: int) -> tuple[int, ...] | None:
        if len(node.input) <= idx or not node.input[idx]:
            return None
        name = node.input[idx]
        if name not in self.consts:
            return None
        return tuple(int(v) for v in np.asarray(self.consts[name]).reshape(-1))


# ---------------------------------------------------------------------------- op importers
# Each returns False to fall back to an opaque node.


def _pads_for(auto_pad: str, pads, in_hw, k, strides, dilations) -> tuple[int, int, int, int] | None:
    ap = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if ap in ("NOTSET", ""):
        p = tuple(int(x) for x in (pads or (0, 0, 0, 0)))
        return p if len(p) == 4 else None
    if ap == "VALID":
        return (0, 0, 0, 0)
    if ap in ("SAME_UPPER", "SAME_LOWER"):
        lo_hi = []
        for size, kk, s, d in zip(in_hw, k, strides, dilations):
            eff = (kk - 1) * d + 1
            total = max((math.ceil(size / s) - 1) * s + eff - size, 0)
            small = total // 2
            lo_hi.append((small, total - small) if ap == "SAME_UPPER" else (total - small, small))
        return (lo_hi[0][0], lo_hi[1][0], lo_hi[0][1], lo_hi[1][1])
    return None


def _imp_conv(im: _Importer, node, a):
    x = im.shape_of(node.input[0])
    w = im.shape_of(node.input[1])
    if len(x) != 4 or len(w) != 4:
        return False
    strides = tuple(a.get("strides", (1, 1)))
    dil = tuple(a.get("dilations", (1, 1)))
    pads = _pads_for(a.get("auto_pad", "NOTSET"), a.get("pads"), x[2:], w[2:], strides, dil)
    if pads is None:
        return False
    ins = [im.ref(node.input[0]), im.ref(node.input[1])]
    if len(node.input) > 2 and node.input[2]:
        ins.append(im.ref(node.input[2]))
    im.emit(node, "conv2d", ins, strides=strides, pads=pads, dilations=dil, groups=int(a.get("group", 1)))


def _imp_matmul(im: _Importer, node, a):
    sa, sb = im.shape_of(node.input[0]), im.shape_of(node.input[1])
    if len(sa) < 2 or len(sb) < 2:
        return False
    im.emit(node, "matmul", [im.ref(node.input[0]), im.ref(node.input[1])])


def _imp_gemm(im: _Importer, node, a):
    alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
    ta, tb = int(a.get("transA", 0)), int(a.get("transB", 0))
    A, B = node.input[0], node.input[1]
    C = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if len(im.shape_of(A)) != 2 or len(im.shape_of(B)) != 2:
        return False
    x = im.ref(A)
    if ta:
        x = (im.g.add("transpose", [x], perm=(1, 0)), 0)
    out_name = node.output[0]
    if B in im.consts:
        wv = np.asarray(im.consts[B], dtype=np.float32)
        if tb:
            wv = wv.T
        if alpha != 1.0:
            wv = wv * np.float32(alpha)
        w = im.ref(B) if (not tb and alpha == 1.0) else im.const_weight(np.ascontiguousarray(wv), f"{B}::gemm")
        n_out = wv.shape[1]
        if C is not None and C in im.consts and im.consts[C].size == n_out and im.consts[C].ndim <= 2 \
                and im.consts[C].shape[-1:] == (n_out,):
            bv = np.asarray(im.consts[C], dtype=np.float32).reshape(n_out) * np.float32(beta)
            b = im.ref(C) if (beta == 1.0 and im.consts[C].ndim == 1) else im.const_weight(bv, f"{C}::gemm")
            im.emit(node, "linear", [x, w, b])
            return
        y = (im.g.add("linear", [x, w]), 0)
    else:
        w = im.ref(B)
        if tb:
            w = (im.g.add("transpose", [w], perm=(1, 0)), 0)
        y = (im.g.add("matmul", [x, w]), 0)
        if alpha != 1.0:
            y = (im.g.add("mul", [y, im.const_weight(np.float32(alpha), f"{out_name}::alpha")]), 0)
    if C is not None:
        c = im.ref(C)
        if beta != 1.0:
            c = (im.g.add("mul", [c, im.const_weight(np.float32(beta), f"{out_name}::beta")]), 0)
        y = (im.g.add("add", [y, c]), 0)
    im.env[out_name] = y


def _binary(op):
    def f(im: _Importer, node, a):
        im.emit(node, op, [im.ref(node.input[0]), im.ref(node.input[1])])
    return f


def _unary(op):
    def f(im: _Importer, node, a):
        im.emit(node, op, [im.ref(node.input[0])])
    return f


def _imp_gelu(im: _Importer, node, a):
    approx = a.get("approximate", "none")
    approx = approx.decode() if isinstance(approx, bytes) else approx
    im.emit(node, "gelu_tanh" if approx == "tanh" else "gelu", [im.ref(node.input[0])])


def _imp_hardsigmoid(im: _Importer, node, a):
    if not (math.isclose(float(a.get("alpha", 0.2)), 1 / 6, rel_tol=1e-6)
            and math.isclose(float(a.get("beta", 0.5)), 0.5, rel_tol=1e-6)):
        return False  # not PyTorch's hardsigmoid (the IR activation)
    im.emit(node, "hardsigmoid", [im.ref(node.input[0])])


def _imp_clip(im: _Importer, node, a):
    def bound(k, attr):
        if len(node.input) > k and node.input[k]:
            v = im.consts.get(node.input[k])
            return None if v is None or np.asarray(v).size != 1 else float(np.asarray(v).reshape(()))
        return float(a[attr]) if attr in a else (math.inf if attr == "max" else -math.inf)

    lo, hi = bound(1, "min"), bound(2, "max")
    if lo == 0.0 and hi == 6.0:
        im.emit(node, "relu6", [im.ref(node.input[0])])
    elif lo == 0.0 and hi == math.inf:
        im.emit(node, "relu", [im.ref(node.input[0])])
    else:
        return False


def _imp_pow(im: _Importer, node, a):
    e = im.consts.get(node.input[1])
    if e is None or np.asarray(e).size != 1 or np.ndim(e) > len(im.shape_of(node.input[0])):
        return False  # a tensor exponent, or one that would broadcast the base
    im.emit(node, "pow", [im.ref(node.input[0])], exponent=float(np.asarray(e).reshape(())))


def _imp_reduce_mean(im: _Importer, node, a):
    x = im.shape_of(node.input[0])
    if len(node.input) > 1 and node.input[1]:
        axes = im.const_ints(node, 1)
        if axes is None:
            return False  # axes computed at run time
    else:
        axes = tuple(a["axes"]) if "axes" in a else ()
    if not axes:
        if int(a.get("noop_with_empty_axes", 0)):
            return False
        axes = tuple(range(len(x)))
    axes = tuple(sorted({v % len(x) for v in axes}))
    keep = bool(int(a.get("keepdims", 1)))
    if not keep and len(axes) == len(x):
        return False  # a 0-d result: keep it opaque
    if len(x) == 4 and axes == (2, 3) and keep:
        im.emit(node, "global_avgpool", [im.ref(node.input[0])])  # the same computation
    else:
        im.emit(node, "reduce_mean", [im.ref(node.input[0])], axes=axes, keepdims=keep)


def _imp_gather(im: _Importer, node, a):
    data, ind = node.input[0], node.input[1]
    if not im.is_float(data) or len(im.shape_of(data)) < 1:
        return False
    out_rank = len(im.shape_of(data)) - 1 + len(im.shape_of(ind))
    if out_rank == 0:
        return False  # a 0-d result: keep it opaque
    if ind in im.consts:
        v = np.asarray(im.consts[ind])
        if v.dtype.kind not in "iu" or (v.size and np.abs(v).max() >= 2 ** 24):
            return False  # not exactly representable as the IR's float values
        idx = im.ref(ind)
    elif ind in im.env and np.dtype(helper.tensor_dtype_to_np_dtype(im.types.get(ind, 7))).kind in "iu":
        idx = im.ref(ind)
    else:
        return False
    im.emit(node, "gather", [im.ref(data), idx], axis=int(a.get("axis", 0)))


def _imp_slice(im: _Importer, node, a):
    """A static, unit-step Slice is a split (per sliced axis) keeping the middle part, so
    it stays layout-only and visible to the concat/split rules."""
    x = im.shape_of(node.input[0])
    starts, ends = im.const_ints(node, 1), im.const_ints(node, 2)
    if starts is None or ends is None:
        return False
    has = lambda k: len(node.input) > k and node.input[k]  # noqa: E731
    axes = im.const_ints(node, 3) if has(3) else tuple(range(len(starts)))
    steps = im.const_ints(node, 4) if has(4) else (1,) * len(starts)
    if axes is None or steps is None or any(st != 1 for st in steps) or not len(starts) == len(ends) == len(axes):
        return False
    ref = im.ref(node.input[0])
    for s, e, ax in zip(starts, ends, axes):
        ax %= len(x)
        d = x[ax]
        lo = min(max(s + d if s < 0 else s, 0), d)
        hi = min(max(e + d if e < 0 else e, 0), d)
        if hi <= lo:
            return False  # an empty result: keep it opaque
        if (lo, hi) == (0, d):
            continue
        sizes = tuple(v for v in (lo, hi - lo, d - hi) if v)
        nid = im.g.add("split", [ref], axis=ax, sizes=sizes)
        ref = (nid, 1 if lo else 0)
    im.env[node.output[0]] = ref


def _imp_cast(im: _Importer, node, a):
    if int(a.get("to", 0)) != FLOAT or not im.is_float(node.input[0]):
        return False
    im.env[node.output[0]] = im.ref(node.input[0])  # float32 -> float32 (HF norms write one): no-op


def _imp_identity(im: _Importer, node, a):
    if len([o for o in node.output if o]) != 1 or not node.output[0]:
        return False
    if node.op_type == "Dropout" and len(node.input) > 2 and node.input[2]:
        t = im.consts.get(node.input[2])
        if t is None or bool(np.asarray(t)):
            return False  # training mode: not an identity
    im.emit(node, "identity", [im.ref(node.input[0])])


def _imp_batchnorm(im: _Importer, node, a):
    if int(a.get("training_mode", 0)) or len([o for o in node.output if o]) != 1:
        return False
    im.emit(node, "batchnorm", [im.ref(i) for i in node.input[:5]], epsilon=float(a.get("epsilon", 1e-5)))


def _imp_layernorm(im: _Importer, node, a):
    x = im.shape_of(node.input[0])
    axis = int(a.get("axis", -1))
    if axis not in (-1, len(x) - 1) or len([o for o in node.output if o]) != 1 or not node.output[0]:
        return False
    d = x[-1]
    scale = im.shape_of(node.input[1])
    if tuple(scale) != (d,):
        return False
    bias = (im.ref(node.input[2]) if len(node.input) > 2 and node.input[2]
            else im.const_weight(np.zeros(d, np.float32), f"{node.output[0]}::bias"))
    if len(node.input) > 2 and node.input[2] and tuple(im.shape_of(node.input[2])) != (d,):
        return False
    im.emit(node, "layernorm", [im.ref(node.input[0]), im.ref(node.input[1]), bias],
            epsilon=float(a.get("epsilon", 1e-5)))


def _imp_pool(im: _Importer, node, a):
    x = im.shape_of(node.input[0])
    if len(x) != 4 or len([o for o in node.output if o]) != 1 or not node.output[0]:
        return False
    k = tuple(a["kernel_shape"])
    strides = tuple(a.get("strides", (1, 1)))
    if tuple(a.get("dilations", (1, 1))) != (1, 1) or int(a.get("storage_order", 0)):
        return False
    pads = _pads_for(a.get("auto_pad", "NOTSET"), a.get("pads"), x[2:], k, strides, (1, 1))
    if pads is None:
        return False
    is_max = node.op_type == "MaxPool"
    if int(a.get("ceil_mode", 0)):
        if not is_max:
            return False
        want = im.shapes.get(node.output[0])
        if want is None or len(want) != 4:
            return False
        pt, pl, pb, pr = pads
        extra = []
        for ax, (size, kk, s, lo, hi) in enumerate(zip(x[2:], k, strides, (pt, pl), (pb, pr))):
            need = (want[2 + ax] - 1) * s + kk - (size + lo + hi)
            extra.append(max(need, 0))
        pads = (pt, pl, pb + extra[0], pr + extra[1])
        if pads[2] >= k[0] or pads[3] >= k[1]:
            return False
    attrs = dict(kernel=k, strides=strides, pads=pads)
    if not is_max:
        attrs["count_include_pad"] = bool(int(a.get("count_include_pad", 0)))
    nid = im.emit(node, "maxpool" if is_max else "avgpool", [im.ref(node.input[0])], **attrs)
    want = im.shapes.get(node.output[0])
    if want is not None and tuple(want) != im.g[nid].shape:
        raise GraphError(f"pool output {im.g[nid].shape} differs from ONNX shape inference {want}")


def _imp_gap(im: _Importer, node, a):
    if len(im.shape_of(node.input[0])) != 4:
        return False
    im.emit(node, "global_avgpool", [im.ref(node.input[0])])


def _imp_concat(im: _Importer, node, a):
    im.emit(node, "concat", [im.ref(i) for i in node.input], axis=int(a["axis"]))


def _imp_split(im: _Importer, node, a):
    x = im.shape_of(node.input[0])
    axis = int(a.get("axis", 0)) % len(x)
    n_out = len(node.output)
    sizes = im.const_ints(node, 1)
    if sizes is None and len(node.input) > 1 and node.input[1]:
        return False  # split sizes computed at run time
    if sizes is None and "split" in a:
        sizes = tuple(a["split"])
    if sizes is None:
        num = int(a.get("num_outputs", n_out))
        chunk = math.ceil(x[axis] / num)
        sizes = tuple(min(chunk, x[axis] - i * chunk) for i in range(num))
    im.emit(node, "split", [im.ref(node.input[0])], axis=axis, sizes=sizes)


def _imp_reshape(im: _Importer, node, a):
    x = im.shape_of(node.input[0])
    target = im.const_ints(node, 1)
    if target is None:
        return False
    allowzero = int(a.get("allowzero", 0))
    out = [x[i] if (d == 0 and not allowzero) else d for i, d in enumerate(target)]
    if out.count(-1) > 1:
        raise GraphError(f"reshape target {target} has more than one -1")
    if -1 in out:
        rest = math.prod(d for d in out if d != -1)
        if rest == 0 or math.prod(x) % rest:
            raise GraphError(f"cannot reshape {x} to {target}")
        out[out.index(-1)] = math.prod(x) // rest
    im.emit(node, "reshape", [im.ref(node.input[0])], shape=tuple(out))


def _imp_flatten(im: _Importer, node, a):
    x = im.shape_of(node.input[0])
    axis = int(a.get("axis", 1)) % (len(x) + 1) if len(x) else 0
    im.emit(node, "reshape", [im.ref(node.input[0])], shape=(math.prod(x[:axis]), math.prod(x[axis:])))


def _imp_squeeze(im: _Importer, node, a):
    x = im.shape_of(node.input[0])
    axes = im.const_ints(node, 1)
    if axes is None:
        if len(node.input) > 1 and node.input[1]:
            return False
        axes = tuple(a["axes"]) if "axes" in a else None
    if node.op_type == "Squeeze":
        if axes is None:
            out = tuple(d for d in x if d != 1)
        else:
            ax = {v % len(x) for v in axes}
            if any(x[i] != 1 for i in ax):
                raise GraphError(f"cannot squeeze axes {axes} of {x}")
            out = tuple(d for i, d in enumerate(x) if i not in ax)
    else:
        if axes is None:
            return False
        rank = len(x) + len(axes)
        ax = sorted(v % rank for v in axes)
        out_l, it = [], iter(x)
        for i in range(rank):
            out_l.append(1 if i in ax else next(it))
        out = tuple(out_l)
    if not out:
        return False  # a 0-d result: keep it opaque
    im.emit(node, "reshape", [im.ref(node.input[0])], shape=out)


def _imp_transpose(im: _Importer, node, a):
    x = im.shape_of(node.input[0])
    perm = tuple(a.get("perm", tuple(reversed(range(len(x))))))
    im.emit(node, "transpose", [im.ref(node.input[0])], perm=perm)


def _imp_softmax(im: _Importer, node, a):
    x = im.shape_of(node.input[0])
    axis = int(a.get("axis", -1))
    if im.opset and im.opset < 13 and axis % len(x) != len(x) - 1:
        return False
    im.emit(node, "softmax", [im.ref(node.input[0])], axis=axis)


_IMPORTERS = {
    "Conv": _imp_conv,
    "MatMul": _imp_matmul,
    "Gemm": _imp_gemm,
    "Add": _binary("add"),
    "Sub": _binary("sub"),
    "Mul": _binary("mul"),
    "Div": _binary("div"),
    "Relu": _unary("relu"),
    "Sigmoid": _unary("sigmoid"),
    "Tanh": _unary("tanh"),
    "Gelu": _imp_gelu,
    "HardSwish": _unary("hardswish"),
    "HardSigmoid": _imp_hardsigmoid,
    "Clip": _imp_clip,
    "Erf": _unary("erf"),
    "Sqrt": _unary("sqrt"),
    "Reciprocal": _unary("reciprocal"),
    "Neg": _unary("neg"),
    "Pow": _imp_pow,
    "ReduceMean": _imp_reduce_mean,
    "Gather": _imp_gather,
    "Identity": _imp_identity,
    "Cast": _imp_cast,
    "Slice": _imp_slice,
    "Dropout": _imp_identity,
    "BatchNormalization": _imp_batchnorm,
    "LayerNormalization": _imp_layernorm,
    "MaxPool": _imp_pool,
    "AveragePool": _imp_pool,
    "GlobalAveragePool": _imp_gap,
    "Concat": _imp_concat,
    "Split": _imp_split,
    "Reshape": _imp_reshape,
    "Flatten": _imp_flatten,
    "Squeeze": _imp_squeeze,
    "Unsqueeze": _imp_squeeze,
    "Transpose": _imp_transpose,
    "Softmax": _imp_softmax,
}


def import_onnx(src: str | Path | onnx.ModelProto) -> Graph:
    """Read an ONNX model (path or ModelProto) into a :class:`Graph`.

    Raises GraphError with a one-line message naming the file (and node) on a corrupt
    file, a dynamic input dimension or an inconsistent node.
    """
    model, label = _load_model(src)
    return _Importer(model, label).run()


# ============================================================================ export


MIN_OPSET, MAX_OPSET = 13, 21  # default-domain opsets the exporter writes


def _np_dtype(elem: int) -> np.dtype:
    return np.dtype(helper.tensor_dtype_to_np_dtype(elem))


class _Exporter:
    """Writes one graph at one opset. Every IR tensor is written once in its native ONNX
    element type (float for IR ops, the source's type for inputs and opaque outputs);
    :meth:`tensor` casts on demand. Constant tensors (weights and anything computed from
    weights only) are evaluated here and written as initializers of the type their
    consumer needs, so nothing constant is computed at run time."""

    def __init__(self, graph: Graph, opset: int, seed: int, upsampled: set[int] | None = None):
        if not MIN_OPSET <= opset <= MAX_OPSET:
            raise GraphError(f"export opset {opset} is not supported ({MIN_OPSET}..{MAX_OPSET})")
        self.g = graph
        self.opset = opset
        self.seed = seed
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[TensorProto] = []
        self.names: dict[TensorRef, str] = {}
        self.types: dict[TensorRef, int] = {}
        self.typed: dict[tuple[TensorRef, int], str] = {}
        self.used: set[str] = set()
        self.domains: dict[str, int] = {}
        self.const_ids = graph.constant_nodes()
        self.const_vals: dict[TensorRef, np.ndarray] = {}
        # channel-scale muls written with their scale upsampled (None: every one that qualifies)
        self.upsampled = upsampled
        self.resized: dict[int, str] = {}  # node id -> name of the Resize output written for it

    def unique(self, base: str) -> str:
        name, k = base, 1
        while name in self.used:
            name = f"{base}_{k}"
            k += 1
        self.used.add(name)
        return name

    def const(self, value: np.ndarray, base: str) -> str:
        name = self.unique(base)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def ints(self, values, base: str) -> str:
        return self.const(np.asarray(values, dtype=np.int64), base)

    def scalar(self, v: float, base: str) -> str:
        return self.const(np.asarray(v, dtype=np.float32), base)

    def add(self, op: str, inputs: Sequence[str], out: str | None = None, n_out: int = 1, **attrs) -> list[str]:
        outs = [out] if out is not None else [self.unique(f"_{op.lower()}") for _ in range(n_out)]
        outs = [o if o is not None else self.unique(f"_{op.lower()}") for o in outs]
        self.nodes.append(helper.make_node(op, list(inputs), outs, **attrs))
        return outs

    def act(self, x: str, activation: str, out: str) -> None:
        if activation == "none":
            self.add("Identity", [x], out)
        elif activation == "relu6":
            self.add("Clip", [x, self.scalar(0.0, "_zero"), self.scalar(6.0, "_six")], out)
        elif activation == "hardsigmoid":
            self.add("HardSigmoid", [x], out, alpha=1.0 / 6.0, beta=0.5)
        elif activation in ("gelu", "gelu_tanh"):
            _write_gelu(self, x, out, approximate=activation == "gelu_tanh")
        elif activation == "hardswish":
            if self.opset >= 14:
                self.add("HardSwish", [x], out)
            else:
                (h,) = self.add("HardSigmoid", [x], alpha=1.0 / 6.0, beta=0.5)
                self.add("Mul", [x, h], out)
        else:
            self.add({"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh"}[activation], [x], out)

    def native_type(self, ref: TensorRef) -> int:
        """ONNX element type an IR tensor is written in."""
        n = self.g.nodes[ref[0]]
        if n.op == "input":
            return _np_to_elem(np.dtype(n.attrs["dtype"]))
        if n.op == "opaque" and ref[0] not in self.const_ids:
            return int(_opaque_spec(n)["out_types"][ref[1]])
        return FLOAT

    def tensor(self, ref: TensorRef, elem: int = FLOAT) -> str:
        """Name of IR tensor ``ref`` as ONNX element type ``elem`` (a Cast, or a typed initializer
        for a constant, is added on first need)."""
        key = (ref, elem)
        if key in self.typed:
            return self.typed[key]
        if ref[0] in self.const_ids:
            val = self.const_vals[ref]
            dt = _np_dtype(elem)
            if dt.kind in "iu":
                val = np.rint(val)
            node = self.g.nodes[ref[0]]
            base = node.attrs["name"] if node.op == "weight" else f"_const{ref[0]}_{ref[1]}"
            name = self.const(val.astype(dt), base if elem == FLOAT else f"{base}_{dt.name}")
        elif self.types[ref] == elem:
            name = self.names[ref]
        else:
            (name,) = self.add("Cast", [self.names[ref]], to=int(elem))
        self.typed[key] = name
        return name

    def run(self, outputs: Sequence[tuple[str, int]]) -> onnx.ModelProto:
        from systems_envs.graph.executor import constant_values

        g = self.g
        frontier = set()
        for nid in g.topo_order():
            n = g.nodes[nid]
            if nid in self.const_ids:
                continue
            frontier.update(r for r in n.inputs if r[0] in self.const_ids)
        frontier.update(r for r in g.outputs if r[0] in self.const_ids)
        self.const_vals = constant_values(g, sorted(frontier), seed=self.seed)
        for n in g.inputs:
            self.used.add(n.attrs["name"])
        for name, _ in outputs:
            if name in self.used:
                raise GraphError(f"graph {g.name!r}: output name {name!r} is also an input name")
            self.used.add(name)
        preferred: dict[TensorRef, str] = {}
        for r, (name, elem) in zip(g.outputs, outputs):
            if r not in preferred and r[0] not in self.const_ids and g.nodes[r[0]].op != "input" \
                    and self.native_type(r) == elem:
                preferred[r] = name
        graph_inputs = []
        for nid in g.topo_order():
            n = g.nodes[nid]
            if n.op == "weight" or nid in self.const_ids:
                continue
            if n.op == "input":
                name = n.attrs["name"]
                self.names[(nid, 0)], self.types[(nid, 0)] = name, self.native_type((nid, 0))
                graph_inputs.append(helper.make_tensor_value_info(name, self.types[(nid, 0)], list(n.shape)))
                continue
            outs = [preferred.get((nid, i)) or self.unique(f"{n.op}_{nid}" + (f"_{i}" if len(n.shapes) > 1 else ""))
                    for i in range(len(n.shapes))]
            fn = _EXPORTERS.get(n.op)
            if fn is None:
                raise GraphError(f"node {n.name!r}: no ONNX export rule for op {n.op!r}")
            ins = None if n.op in _TYPED_INPUTS else [self.tensor(r) for r in n.inputs]
            fn(self, n, ins, outs)
            for i, o in enumerate(outs):
                self.names[(nid, i)], self.types[(nid, i)] = o, self.native_type((nid, i))
        graph_outputs = []
        for r, (name, elem) in zip(g.outputs, outputs):
            if preferred.get(r) != name:
                self.add("Identity", [self.tensor(r, elem)], name)
            graph_outputs.append(helper.make_tensor_value_info(name, elem, list(g.shape(r))))
        gp = helper.make_graph(self.nodes, g.name, graph_inputs, graph_outputs, initializer=self.inits)
        opsets = {"": self.opset}
        if g.source is not None:
            opsets.update({d: v for d, v in g.source.opsets if d not in ("", "ai.onnx")})
        opsets.update(self.domains)
        model = helper.make_model(gp, opset_imports=[helper.make_opsetid(d, v) for d, v in sorted(opsets.items())],
                                  producer_name="sysworld")
        if g.source is not None:
            model.functions.extend(onnx.FunctionProto.FromString(f) for f in g.source.functions)
        model.ir_version = IR_VERSION
        return model


def _exp_conv(ex: _Exporter, n: Node, ins, outs):
    w = ex.g.shape(n.inputs[1])
    a = n.attrs
    y = outs[0] if a["activation"] == "none" else ex.unique(f"_conv{n.id}")
    ex.add("Conv", ins, y, kernel_shape=list(w[2:]), strides=list(a["strides"]), pads=list(a["pads"]),
           dilations=list(a["dilations"]), group=a["groups"])
    if a["activation"] != "none":
        ex.act(y, a["activation"], outs[0])


def _exp_matmul(ex: _Exporter, n: Node, ins, outs):
    """``linear`` on a 2-D input is written as Gemm (as exporters write ``nn.Linear``;
    onnxruntime fuses Gemm with a following activation), otherwise MatMul [+ Add]."""
    act = n.attrs["activation"]
    has_bias = n.op == "linear" and len(ins) == 3
    if n.op == "linear" and len(ex.g.shape(n.inputs[0])) == 2:
        y = outs[0] if act == "none" else ex.unique(f"_gemm{n.id}")
        ex.add("Gemm", ins, y)
        if act != "none":
            ex.act(y, act, outs[0])
        return
    y = outs[0] if (act == "none" and not has_bias) else ex.unique(f"_mm{n.id}")
    ex.add("MatMul", ins[:2], y)
    if has_bias:
        z = outs[0] if act == "none" else ex.unique(f"_bias{n.id}")
        ex.add("Add", [y, ins[2]], z)
        y = z
    if act != "none":
        ex.act(y, act, outs[0])


def _exp_simple(onnx_op):
    def f(ex: _Exporter, n: Node, ins, outs):
        ex.add(onnx_op, ins, outs[0])
    return f


def _write_gelu(ex: _Exporter, x: str, out: str, approximate: bool) -> None:
    """GELU as ONNX Gelu from opset 20, else the primitive form PyTorch writes (which
    onnxruntime fuses back into one Gelu / FastGelu kernel)."""
    if ex.opset >= 20:
        ex.add("Gelu", [x], out, approximate="tanh" if approximate else "none")
    elif not approximate:
        (t,) = ex.add("Div", [x, ex.scalar(math.sqrt(2.0), "_sqrt2")])
        (e,) = ex.add("Erf", [t])
        (p,) = ex.add("Add", [e, ex.scalar(1.0, "_one")])
        (m,) = ex.add("Mul", [x, p])
        ex.add("Mul", [m, ex.scalar(0.5, "_half")], out)
    else:
        (c,) = ex.add("Pow", [x, ex.scalar(3.0, "_three")])
        (c,) = ex.add("Mul", [c, ex.scalar(0.044715, "_gelu_c")])
        (c,) = ex.add("Add", [x, c])
        (c,) = ex.add("Mul", [c, ex.scalar(math.sqrt(2.0 / math.pi), "_sqrt_2_pi")])
        (t,) = ex.add("Tanh", [c])
        (p,) = ex.add("Add", [t, ex.scalar(1.0, "_one")])
        (m,) = ex.add("Mul", [x, ex.scalar(0.5, "_half")])
        ex.add("Mul", [m, p], out)


def _exp_batchnorm(ex: _Exporter, n: Node, ins, outs):
    ex.add("BatchNormalization", ins, outs[0], epsilon=float(n.attrs["epsilon"]))


def _exp_layernorm(ex: _Exporter, n: Node, ins, outs):
    eps = float(n.attrs["epsilon"])
    if ex.opset >= 17:
        ex.add("LayerNormalization", ins, outs[0], axis=-1, epsilon=eps)
        return
    x, gamma, beta = ins
    (mu,) = ex.add("ReduceMean", [x], axes=[-1], keepdims=1)
    (d,) = ex.add("Sub", [x, mu])
    (sq,) = ex.add("Mul", [d, d])
    (var,) = ex.add("ReduceMean", [sq], axes=[-1], keepdims=1)
    (ve,) = ex.add("Add", [var, ex.scalar(eps, "_eps")])
    (sd,) = ex.add("Sqrt", [ve])
    (nrm,) = ex.add("Div", [d, sd])
    (sc,) = ex.add("Mul", [nrm, gamma])
    ex.add("Add", [sc, beta], outs[0])


def _exp_pool(ex: _Exporter, n: Node, ins, outs):
    a = n.attrs
    act = a["activation"]
    y = outs[0] if act == "none" else ex.unique(f"_pool{n.id}")
    kw = dict(kernel_shape=list(a["kernel"]), strides=list(a["strides"]), pads=list(a["pads"]))
    if n.op == "avgpool":
        ex.add("AveragePool", ins, y, count_include_pad=int(a["count_include_pad"]), **kw)
    else:
        ex.add("MaxPool", ins, y, **kw)
    if act != "none":
        ex.act(y, act, outs[0])


def _exp_split(ex: _Exporter, n: Node, ins, outs):
    """Split; when some parts are unused (an imported Slice), a Slice per used part, so the
    runtime copies only what is read."""
    g, axis, sizes = ex.g, int(n.attrs["axis"]), n.attrs["sizes"]
    used = [i for i in range(len(sizes)) if g.tensor_uses((n.id, i)) or (n.id, i) in g.outputs]
    if len(used) == len(sizes):
        ex.nodes.append(helper.make_node("Split", [ins[0], ex.ints(sizes, f"_split{n.id}_sizes")], outs, axis=axis))
        return
    offsets = [sum(sizes[:i]) for i in range(len(sizes))]
    for i in used:
        ex.add("Slice", [ins[0], ex.ints([offsets[i]], f"_starts{n.id}_{i}"),
                         ex.ints([offsets[i] + sizes[i]], f"_ends{n.id}_{i}"), ex.ints([axis], f"_axes{n.id}_{i}")],
               outs[i])


def _exp_reshape(ex: _Exporter, n: Node, ins, outs):
    ex.add("Reshape", [ins[0], ex.ints(n.attrs["shape"], f"_shape{n.id}")], outs[0])


def _exp_enlarge(ex: _Exporter, n: Node, ins, outs):
    """Zero-pad the kernel by concatenating zero blocks (onnxruntime's Pad->Conv fusion
    mis-fires when the padded tensor is the Conv weight, so Pad is avoided)."""
    w, ref = ex.g.shape(n.inputs[0]), ex.g.shape(n.inputs[1])
    dh, dw = (ref[2] - w[2]) // 2, (ref[3] - w[3]) // 2
    y = ins[0]
    if dh:
        z = ex.const(np.zeros((w[0], w[1], dh, w[3]), np.float32), f"_zeros{n.id}_h")
        (y,) = ex.add("Concat", [z, y, z], None if dw else outs[0], axis=2)
    if dw:
        z = ex.const(np.zeros((w[0], w[1], ref[2], dw), np.float32), f"_zeros{n.id}_w")
        ex.add("Concat", [z, y, z], outs[0], axis=3)
    if not dh and not dw:
        ex.add("Identity", [y], outs[0])


def _exp_merge_gconv(ex: _Exporter, n: Node, ins, outs):
    """out = Concat_j(w * mask_j, axis=1), mask_j[o] = 1 iff output channel o keeps block j."""
    O = ex.g.shape(n.inputs[0])[0]
    c = n.attrs["count"]
    per = O // (n.attrs["groups"] or c)
    parts = []
    for j in range(c):
        mask = np.array([(o // per) % c == j for o in range(O)], np.float32).reshape(O, 1, 1, 1)
        (p,) = ex.add("Mul", [ins[0], ex.const(mask, f"_mgmask{n.id}_{j}")])
        parts.append(p)
    ex.add("Concat", parts, outs[0], axis=1)


def _exp_opaque(ex: _Exporter, n: Node, ins, outs):
    """Re-emit the stored node; its inputs in the element types it was imported with and its
    outputs in their own types (consumers cast on demand)."""
    spec = _opaque_spec(n)
    proto = onnx.NodeProto.FromString(n.attrs["onnx_node"])
    node_in = []
    for slot in spec["inputs"]:
        if slot[0] == "graph":
            node_in.append(ex.tensor(n.inputs[slot[1]], int(slot[2])))
        elif slot[0] == "const":
            node_in.append(ex.const(np.frombuffer(slot[3], dtype=np.dtype(slot[1])).reshape(slot[2]),
                                    f"_const{n.id}"))
        else:
            node_in.append("")
    node_out = [outs[i] if o else "" for i, o in enumerate(proto.output)]
    p = onnx.NodeProto()
    p.CopyFrom(proto)
    del p.input[:]
    p.input.extend(node_in)
    del p.output[:]
    p.output.extend(node_out)
    p.name = ex.unique(p.name or f"opaque_{n.id}")
    ex.nodes.append(p)
    if spec["domain"] not in ("", "ai.onnx"):
        ex.domains[spec["domain"]] = spec["opset"]


def _exp_reduce_mean(ex: _Exporter, n: Node, ins, outs):
    axes, keep = list(n.attrs["axes"]), int(bool(n.attrs["keepdims"]))
    if ex.opset >= 18:
        ex.add("ReduceMean", [ins[0], ex.ints(axes, f"_axes{n.id}")], outs[0], keepdims=keep)
    else:
        ex.add("ReduceMean", [ins[0]], outs[0], axes=axes, keepdims=keep)


def _exp_gather(ex: _Exporter, n: Node, ins, outs):
    ex.add("Gather", [ex.tensor(n.inputs[0]), ex.tensor(n.inputs[1], TensorProto.INT64)], outs[0],
           axis=int(n.attrs["axis"]))


def _exp_act(activation: str):
    def f(ex: _Exporter, n: Node, ins, outs):
        ex.act(ins[0], activation, outs[0])
    return f


def _exp_pow(ex: _Exporter, n: Node, ins, outs):
    ex.add("Pow", [ins[0], ex.scalar(n.attrs["exponent"], f"_exponent{n.id}")], outs[0])


def _exp_rmsnorm(ex: _Exporter, n: Node, ins, outs):
    """The primitive form PyTorch writes (onnxruntime fuses it into SimplifiedLayerNormalization)."""
    x, gamma = ins
    (sq,) = ex.add("Pow", [x, ex.scalar(2.0, "_two")])
    axes = [len(n.shape) - 1]
    if ex.opset >= 18:
        (ms,) = ex.add("ReduceMean", [sq, ex.ints(axes, f"_axes{n.id}")], keepdims=1)
    else:
        (ms,) = ex.add("ReduceMean", [sq], axes=axes, keepdims=1)
    (ve,) = ex.add("Add", [ms, ex.scalar(float(n.attrs["epsilon"]), f"_eps{n.id}")])
    (sd,) = ex.add("Sqrt", [ve])
    (nrm,) = ex.add("Div", [x, sd])
    ex.add("Mul", [nrm, gamma], outs[0])


def channel_scale_operand(graph: Graph, n: Node, const: set[int]) -> int | None:
    """Which input (0 or 1) of ``n`` is a computed per-channel scale that a ``mul`` spreads over
    the spatial positions of the other, i.e. ``mul(x [N, C, H, W], s [N, C, 1, 1])`` with
    H * W > 1 and ``s`` not constant (a squeeze-and-excitation block's gate); else None."""
    if n.op != "mul" or len(n.inputs) != 2:
        return None
    shapes = [graph.shape(r) for r in n.inputs]
    for k in (0, 1):
        x, s = shapes[1 - k], shapes[k]
        if len(x) == 4 and len(s) == 4 and tuple(s[:2]) == tuple(x[:2]) and tuple(s[2:]) == (1, 1) \
                and x[2] * x[3] > 1 and n.inputs[k][0] not in const:
            return k
    return None


def _exp_mul(ex: _Exporter, n: Node, ins, outs):
    """``Mul``; a channel-scale mul (:func:`channel_scale_operand`) chosen by
    :func:`export_onnx` is written ``Mul(x, Resize(s))``: a nearest upsampling of the scale to
    x's spatial size, exactly the broadcast Mul does, which onnxruntime runs in its blocked
    NCHWc layout (a broadcast Mul it runs in NCHW, between a reorder out of that layout and
    one back)."""
    k = channel_scale_operand(ex.g, n, ex.const_ids)
    if k is None or (ex.upsampled is not None and n.id not in ex.upsampled):
        ex.add("Mul", ins, outs[0])
        return
    h, w = ex.g.shape(n.inputs[1 - k])[2:]
    scales = ex.const(np.asarray([1.0, 1.0, float(h), float(w)], np.float32), f"_upsample{n.id}")
    (up,) = ex.add("Resize", [ins[k], "", scales], ex.unique(f"upsample_{n.id}"), mode="nearest",
                   coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    ex.resized[n.id] = up
    ex.add("Mul", [ins[1 - k], up] if k == 1 else [up, ins[1 - k]], outs[0])


def nchwc_upsampled(model: onnx.ModelProto, resized: dict[int, str]) -> set[int]:
    """Of the channel-scale muls written with an upsampled scale (``resized``: node id ->
    Resize output name), those that onnxruntime (default optimisations, this machine) runs
    in its NCHWc layout: its NCHWc transformer turned the Resize into an NCHWc Upsample
    whose output a Mul consumes directly, so the Mul's operands are both in that layout.
    Where the scale's or x's producer stays in NCHW (channels not a multiple of the CPU's
    block size, a weight that is not constant), the upsampled scale would be reordered at
    full size instead, slower than the broadcast: those are left out. Empty when
    onnxruntime cannot optimise the model."""
    import os
    import tempfile

    from systems_envs.graph.measure import make_session
    from systems_envs.graph.ort_cost import NCHWC_DOMAIN

    fd, path = tempfile.mkstemp(suffix=".onnx", prefix="sysworld_layout_")
    os.close(fd)
    try:
        make_session(model, optimized_path=path)
        opt = onnx.load(path, load_external_data=False)
    except Exception:
        return set()
    finally:
        os.unlink(path)
    read_by_mul = {i for node in opt.graph.node if node.op_type == "Mul" for i in node.input}
    upsamples = [node for node in opt.graph.node if node.domain == NCHWC_DOMAIN and node.op_type == "Upsample"
                 and node.output[0] in read_by_mul]  # named after the Resize output: "<name>_nchwc..."
    return {nid for nid, name in resized.items() if any(u.name.startswith(f"{name}_nchwc") for u in upsamples)}


_EXPORTERS = {
    "conv2d": _exp_conv,
    "matmul": _exp_matmul,
    "linear": _exp_matmul,
    "add": _exp_simple("Add"),
    "sub": _exp_simple("Sub"),
    "mul": _exp_mul,
    "div": _exp_simple("Div"),
    "relu": _exp_simple("Relu"),
    "sigmoid": _exp_simple("Sigmoid"),
    "tanh": _exp_simple("Tanh"),
    "gelu": _exp_act("gelu"),
    "gelu_tanh": _exp_act("gelu_tanh"),
    "relu6": _exp_act("relu6"),
    "hardsigmoid": _exp_act("hardsigmoid"),
    "hardswish": _exp_act("hardswish"),
    "erf": _exp_simple("Erf"),
    "sqrt": _exp_simple("Sqrt"),
    "reciprocal": _exp_simple("Reciprocal"),
    "neg": _exp_simple("Neg"),
    "pow": _exp_pow,
    "rmsnorm": _exp_rmsnorm,
    "reduce_mean": _exp_reduce_mean,
    "gather": _exp_gather,
    "identity": _exp_simple("Identity"),
    "batchnorm": _exp_batchnorm,
    "layernorm": _exp_layernorm,
    "maxpool": _exp_pool,
    "avgpool": _exp_pool,
    "global_avgpool": _exp_simple("GlobalAveragePool"),
    "concat": lambda ex, n, ins, outs: ex.add("Concat", ins, outs[0], axis=int(n.attrs["axis"])),
    "split": _exp_split,
    "reshape": _exp_reshape,
    "transpose": lambda ex, n, ins, outs: ex.add("Transpose", ins, outs[0], perm=list(n.attrs["perm"])),
    "softmax": lambda ex, n, ins, outs: ex.add("Softmax", ins, outs[0], axis=int(n.attrs["axis"])),
    "enlarge": _exp_enlarge,
    "merge_gconv": _exp_merge_gconv,
    "opaque": _exp_opaque,
}


_TYPED_INPUTS = {"opaque", "gather"}  # exporters that ask for their inputs' element types themselves


def export_onnx(graph: Graph, path: str | Path | None = None, opset: int | None = None,
                seed: int = 0, ort_layout: bool = True) -> onnx.ModelProto:
    """Write ``graph`` as an ONNX model and save it to ``path`` if given.

    Interface: inputs keep their names, shapes and element types (``input`` dtype); a
    graph imported from ONNX keeps its output names and element types (``graph.source``),
    other graphs name outputs ``output_k`` (float32).

    Opset: ``None`` (default) writes the source model's opset (17 for graphs not imported
    from ONNX). Opaque nodes carry their source opset's semantics, so another ``opset``
    is reached by writing at the source opset and converting with
    ``onnx.version_converter``; a GraphError says so when that conversion fails. Other
    domains keep the source's versions; model-local functions are written back.

    Constants (weights, and every node computed from weights only: folded batchnorm,
    concatenated or split weights) are evaluated once and written as initializers;
    weights without a value get the executor's deterministic fill for ``seed`` (default 0,
    as :func:`~systems_envs.graph.executor.execute`), so onnxruntime on the result matches
    the reference executor. The result passes ``onnx.checker.check_model(full_check=True)``
    (else GraphError).

    Layout: onnxruntime on x86 runs chains of convolutions in a blocked NCHWc layout and
    reorders a tensor out of it for any node it cannot run there, such as the broadcast
    ``Mul(x [N, C, H, W], s [N, C, 1, 1])`` of a squeeze-and-excitation gate (a reorder
    out and one back in, both at x's full size). Such a mul is written as
    ``Mul(x, Resize(s))``, a nearest upsampling of ``s`` (the same values the broadcast
    reads), where onnxruntime then keeps it in NCHWc: the written model is optimised once
    by onnxruntime on this machine (:func:`nchwc_upsampled`) and every other such mul is
    written as the plain broadcast. The file is thus shaped for this machine's CPU (its
    NCHWc block size decides which channel counts qualify) and computes the same values on
    any. Not when the opset is converted, nor with ``ort_layout=False`` (every gate a
    plain broadcast, e.g. for another runtime).
    """
    src_opset = graph.source.opset("") if graph.source is not None else None
    opaque_opsets = {int(_opaque_spec(n)["opset"]) for n in graph.nodes.values()
                     if n.op == "opaque" and _opaque_spec(n)["domain"] in ("", "ai.onnx")}
    if len(opaque_opsets) > 1:
        raise GraphError(f"graph {graph.name!r}: opaque nodes come from several opsets {sorted(opaque_opsets)}")
    target = opset if opset is not None else (src_opset or next(iter(opaque_opsets), 17))
    if not MIN_OPSET <= target <= MAX_OPSET:
        raise GraphError(f"export opset {target} is not supported ({MIN_OPSET}..{MAX_OPSET})")
    build = next(iter(opaque_opsets), target)
    if graph.source is not None and len(graph.source.outputs) == len(graph.outputs):
        outputs = list(graph.source.outputs)
    else:
        outputs = [(f"output_{k}", FLOAT) for k in range(len(graph.outputs))]
    ex = _Exporter(graph, build, seed, upsampled=None if ort_layout and build == target else set())
    model = ex.run(outputs)
    if ex.resized:
        kept = nchwc_upsampled(model, ex.resized)
        if kept != set(ex.resized):
            model = _Exporter(graph, build, seed, upsampled=kept).run(outputs)
    if build != target:
        try:
            model = onnx.version_converter.convert_version(model, target)
        except Exception as e:
            raise GraphError(f"graph {graph.name!r}: its opaque nodes have opset-{build} semantics and "
                             f"onnx.version_converter cannot convert them to opset {target}: "
                             f"{str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__}") from None
        model.ir_version = IR_VERSION
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:
        raise GraphError(f"graph {graph.name!r}: the exported model fails onnx.checker: "
                         f"{str(e).strip().splitlines()[0]}") from None
    if path is not None:
        onnx.save(model, str(path))
    return model
