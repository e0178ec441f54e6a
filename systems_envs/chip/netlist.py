"""circuit_training's netlist (a text protobuf of ``node { ... }`` records) as arrays.

File format (plain text or gzip, lengths in microns)::

    node {
      name: "u_ram/clk"
      input: "Grp_3/Pinput"            # 0+ sinks; a node with inputs drives one net
      attr { key: "type" value { placeholder: "MACRO_PIN" } }
      attr { key: "x_offset" value { f: -28.75 } }
      ...
    }

Node types (case-insensitive): ``macro`` (width, height, x, y, orientation; a *soft*
macro = standard-cell cluster when its name starts with ``Grp``, circuit_training's rule,
else a hard macro), ``macro_pin`` (``macro_name``, ``x_offset``, ``y_offset``, optional
``weight``), ``port`` (x, y, ``side``; a port's net has weight 1 whatever its ``weight``
attribute, as in TILOS' plc_client_os). A node named
``__metadata__`` carries global attributes and is not a node. ``stdcell`` nodes are
rejected (cluster them into soft macros first). Whole-line ``#`` comments are skipped.

Indexing: the *node index* of a record is its position in the file, ``__metadata__``
excluded; ``.plc`` files refer to nodes by it. The *objects* are the placeable nodes
(ports, hard macros, soft macros) in file order; the *pins* are the net endpoints: every
macro pin, and every port (a port is its own pin). A net is a driver pin and its
``input`` list (sinks), with the driver's ``weight`` (default 1). Conventions as in
circuit_training:

* hard-macro pin offsets are given for orientation ``N`` and turned with the macro's
  orientation (:data:`ORIENT_MATRIX`); soft-macro pins sit at the cluster centre (their
  offsets are ignored); a port's pin is the port;
* the net count used to normalise wirelength is the sum of net weights.

The hand parser (:func:`read_netlist`) splits the text into node records and reads each
with one regular expression; :func:`read_netlist_protobuf` reads the same file with
``protobuf``'s ``text_format`` into a message class built at run time. On ariane133 the
hand parser is the faster of the two (see ``experiments/bench_macro.py``), so it is the
one used.
"""
from __future__ import annotations

import gzip
import os
import re
from dataclasses import dataclass, field

import numpy as np

ORIENTATIONS = ("N", "S", "FN", "FS", "E", "W", "FE", "FW")
#: ORIENT_MATRIX[o] @ (x_offset, y_offset) is the offset of a pin on a macro in orientation o.
ORIENT_MATRIX = np.array([
    [[1, 0], [0, 1]],     # N
    [[-1, 0], [0, -1]],   # S
    [[-1, 0], [0, 1]],    # FN
    [[1, 0], [0, -1]],    # FS
    [[0, 1], [-1, 0]],    # E:  ( y, -x)
    [[0, -1], [1, 0]],    # W:  (-y,  x)
    [[0, -1], [-1, 0]],   # FE: (-y, -x)
    [[0, 1], [1, 0]],     # FW: ( y,  x)
], dtype=np.float64)

PORT, HARD, SOFT = 0, 1, 2
KIND_NAMES = ("PORT", "HARD_MACRO", "SOFT_MACRO")


class NetlistError(ValueError):
    """A netlist file that cannot be read: names the file, the line or node, the problem."""


@dataclass(frozen=True, eq=False)
class Netlist:
    """A clustered netlist as flat arrays (O objects, P pins, N nets, E net entries).

    Attributes:
      name: a short name (the file's folder name by default).
      node_names: [num_nodes] every node in file order (the .plc index space).
      obj_node: [O] int64 node index of each object. obj_kind: [O] int8 PORT/HARD/SOFT.
      obj_name: [O] names. obj_width, obj_height: [O] float64 microns (0 for ports).
      obj_x, obj_y: [O] float64 centre in microns as written in the netlist.
      obj_orient: [O] int8 index into :data:`ORIENTATIONS` (0 = N for ports, soft macros).
      port_side: [O] str side of ports ('' for macros).
      pin_obj: [P] int64 object of each pin. pin_dx, pin_dy: [P] float64 offsets from the
        object's centre in orientation N (0 for soft-macro pins and ports).
      pin_node: [P] int64 node index of each pin.
      net_ptr: [N + 1] int64 CSR offsets into net_pins. net_pins: [E] int64 pin indices,
        the driver first, then the sinks in file order.
      net_weight: [N] float64 the driver's weight.
      metadata: the ``__metadata__`` attributes.
    """

    name: str
    node_names: tuple
    obj_node: np.ndarray
    obj_kind: np.ndarray
    obj_name: tuple
    obj_width: np.ndarray
    obj_height: np.ndarray
    obj_x: np.ndarray
    obj_y: np.ndarray
    obj_orient: np.ndarray
    port_side: tuple
    pin_obj: np.ndarray
    pin_dx: np.ndarray
    pin_dy: np.ndarray
    pin_node: np.ndarray
    net_ptr: np.ndarray
    net_pins: np.ndarray
    net_weight: np.ndarray
    metadata: dict = field(default_factory=dict)

    @property
    def num_objects(self) -> int:
        return len(self.obj_node)

    @property
    def num_nets(self) -> int:
        return len(self.net_weight)

    @property
    def hard(self) -> np.ndarray:
        """[H] object indices of the hard macros (file order)."""
        return np.flatnonzero(self.obj_kind == HARD)

    @property
    def soft(self) -> np.ndarray:
        """[S] object indices of the soft macros (file order)."""
        return np.flatnonzero(self.obj_kind == SOFT)

    @property
    def ports(self) -> np.ndarray:
        return np.flatnonzero(self.obj_kind == PORT)

    @property
    def net_count(self) -> float:
        """Sum of net weights: circuit_training's wirelength normaliser."""
        return float(self.net_weight.sum())

    def total_area(self) -> float:
        """Area of all macros (hard + soft), square microns."""
        return float((self.obj_width * self.obj_height).sum())

    def node_to_obj(self) -> dict:
        """{node index: object index}."""
        return {int(n): i for i, n in enumerate(self.obj_node)}


def _open_text(path: str) -> str:
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such netlist file")
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        return raw.decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise NetlistError(f"{path}: cannot read ({e})") from None


_TOKEN = re.compile(
    r'(node)\s*\{|(name|input):\s*"((?:[^"\\]|\\.)*)"'
    r'|attr\s*\{\s*key:\s*"([^"]*)"\s*value\s*\{\s*(\w+):\s*("(?:[^"\\]|\\.)*"|[^\s}]+)\s*\}\s*\}'
    r'|(\})')
_COMMENT = re.compile(r"(?m)^[ \t]*#[^\n]*")


def _line_of_node(text: str, k: int) -> int:
    """1-based line of the k-th (0-based) ``node {`` in ``text``."""
    for i, m in enumerate(re.finditer(r"node\s*\{", text)):
        if i == k:
            return 1 + text.count("\n", 0, m.start())
    return 1 + text.count("\n")


def _records(text: str, path: str):
    """[(line thunk, name, inputs, attrs)] for every node record of ``text``.

    The text is tokenised by one regular expression; anything else but whitespace and
    ``#`` comments is an error naming its line.
    """
    text = _COMMENT.sub("", text)      # whole-line comments (they may hold braces)
    rest = _TOKEN.sub(" ", text)
    if rest.strip():
        bad = rest.strip().split()[0]
        pos, at_end = 0, True
        for m in _TOKEN.finditer(text):
            gap = text[pos:m.start()]
            if gap.strip():
                at_end = False
                break
            pos = m.end()
        line = 1 + text.count("\n", 0, pos + len(text[pos:]) - len(text[pos:].lstrip()))
        hint = " (truncated file?)" if at_end else ""
        raise NetlistError(f"{path}: line {line}: cannot parse {bad[:40]!r}{hint}")
    out = []
    depth = 0
    name, inputs, attrs = None, [], {}
    for node, field_, fval, key, kind, val, close in _TOKEN.findall(text):
        if node:
            if depth:
                raise NetlistError(f"{path}: line {_line_of_node(text, len(out))}: node inside a node record")
            depth, name, inputs, attrs = 1, None, [], {}
        elif close:
            if not depth:
                raise NetlistError(f"{path}: line {_line_of_node(text, len(out))}: unmatched '}}'")
            if name is None:
                raise NetlistError(f"{path}: line {_line_of_node(text, len(out))}: node without a name")
            out.append((name, inputs, attrs))
            depth = 0
        elif not depth:
            raise NetlistError(f"{path}: line {_line_of_node(text, len(out))}: field outside a node record")
        elif field_ == "name":
            name = fval
        elif field_ == "input":
            inputs.append(fval)
        elif val.startswith('"'):
            attrs[key] = val[1:-1]
        else:
            try:
                attrs[key] = float(val) if kind in ("f", "i") else val
            except ValueError:
                raise NetlistError(f"{path}: line {_line_of_node(text, len(out))}: node {name!r}: attribute "
                                   f"{key!r} has bad number {val!r}") from None
    if depth:
        raise NetlistError(f"{path}: line {_line_of_node(text, len(out))}: node record not closed (truncated file?)")
    if not out:
        raise NetlistError(f"{path}: no node records")
    return [(lambda k=k: _line_of_node(text, k), *r) for k, r in enumerate(out)]


def read_netlist(path: str, name: str | None = None) -> Netlist:
    """Read a circuit_training netlist (``.pb.txt`` or ``.pb.txt.gz``) with the hand parser."""
    text = _open_text(path)
    return build_netlist(_records(text, path), path, name)


def build_netlist(records, path: str, name: str | None = None) -> Netlist:
    """Assemble a :class:`Netlist` from (line thunk, name, inputs, attrs) records (file order)."""
    node_names, node_line = [], []
    objs = []      # (node, kind, name, w, h, x, y, orient, side)
    pins = []      # (node, macro name, dx, dy, weight, is_soft)
    drivers = []   # (node, inputs, weight)
    metadata = {}
    index = {}
    for line, nname, inputs, attrs in records:
        if nname == "__metadata__":
            metadata.update(attrs)
            continue
        if nname in index:
            raise NetlistError(f"{path}: line {line()}: node {nname!r} defined twice")
        nid = len(node_names)
        index[nname] = nid
        node_names.append(nname)
        node_line.append(line)
        typ = attrs.get("type")

        def num(key, default=None, _a=attrs, _n=nname, _l=line):
            v = _a.get(key, default)
            if v is None:
                raise NetlistError(f"{path}: line {_l()}: node {_n!r} ({typ}) lacks attribute {key!r}")
            if not isinstance(v, float):
                raise NetlistError(f"{path}: line {_l()}: node {_n!r}: attribute {key!r} is not a number")
            return v

        kind = typ.lower() if isinstance(typ, str) else typ
        if kind == "macro":
            w, h = num("width"), num("height")
            if not (w > 0 and h > 0):
                raise NetlistError(f"{path}: line {line()}: macro {nname!r} has non-positive size {w} x {h}")
            soft = nname.startswith("Grp")
            orient = "N" if soft else attrs.get("orientation", "N")
            if orient not in ORIENTATIONS:
                raise NetlistError(f"{path}: line {line()}: macro {nname!r} has unknown orientation {orient!r}")
            objs.append((nid, SOFT if soft else HARD, nname, w, h, num("x", 0.0), num("y", 0.0),
                         ORIENTATIONS.index(orient), ""))
        elif kind == "macro_pin":
            macro = attrs.get("macro_name")
            if not isinstance(macro, str):
                raise NetlistError(f"{path}: line {line()}: pin {nname!r} lacks 'macro_name'")
            pins.append((nid, macro, num("x_offset", 0.0), num("y_offset", 0.0), num("weight", 1.0), line))
        elif kind == "port":
            objs.append((nid, PORT, nname, 0.0, 0.0, num("x"), num("y"), 0, str(attrs.get("side", ""))))
        elif kind == "stdcell":
            raise NetlistError(f"{path}: line {line()}: STDCELL node {nname!r}: standard cells are not supported "
                               f"(cluster them into soft macros)")
        else:
            raise NetlistError(f"{path}: line {line()}: node {nname!r} has unknown type {typ!r}")
        if inputs:   # a port's net has weight 1 (as TILOS' plc_client_os; ariane133's ports have none)
            drivers.append((nid, inputs, 1.0 if kind == "port" else num("weight", 1.0), line))

    if not objs:
        raise NetlistError(f"{path}: no macros or ports")
    obj_node = np.array([o[0] for o in objs], np.int64)
    obj_of_node = {o[0]: i for i, o in enumerate(objs)}
    obj_by_name = {o[2]: i for i, o in enumerate(objs)}
    kinds = np.array([o[1] for o in objs], np.int8)
    # pins: ports first get one pin each, then the macro pins in file order
    pin_of_node = {}
    pin_obj, pin_dx, pin_dy, pin_node = [], [], [], []
    for i, o in enumerate(objs):
        if o[1] == PORT:
            pin_of_node[o[0]] = len(pin_obj)
            pin_obj.append(i), pin_dx.append(0.0), pin_dy.append(0.0), pin_node.append(o[0])
    for nid, macro, dx, dy, _w, line in pins:
        o = obj_by_name.get(macro)
        if o is None or kinds[o] == PORT:
            raise NetlistError(f"{path}: line {line()}: pin {node_names[nid]!r} belongs to unknown macro {macro!r}")
        if kinds[o] == SOFT:     # soft-macro pins sit at the cluster centre
            dx = dy = 0.0
        pin_of_node[nid] = len(pin_obj)
        pin_obj.append(o), pin_dx.append(dx), pin_dy.append(dy), pin_node.append(nid)
    net_ptr, net_pins, net_weight = [0], [], []
    for nid, inputs, weight, line in drivers:
        if nid not in pin_of_node:
            raise NetlistError(f"{path}: line {line()}: node {node_names[nid]!r} has inputs but is not a pin or port")
        net_pins.append(pin_of_node[nid])
        for s in inputs:
            sid = index.get(s)
            if sid is None or sid not in pin_of_node:
                what = "missing node" if sid is None else "not a pin or port"
                raise NetlistError(f"{path}: line {line()}: net of {node_names[nid]!r} has input {s!r}: {what}")
            net_pins.append(pin_of_node[sid])
        net_ptr.append(len(net_pins))
        net_weight.append(float(weight))
    del obj_of_node
    return Netlist(
        name=name or os.path.basename(os.path.dirname(os.path.abspath(path))) or "netlist",
        node_names=tuple(node_names), obj_node=obj_node, obj_kind=kinds,
        obj_name=tuple(o[2] for o in objs),
        obj_width=np.array([o[3] for o in objs]), obj_height=np.array([o[4] for o in objs]),
        obj_x=np.array([o[5] for o in objs]), obj_y=np.array([o[6] for o in objs]),
        obj_orient=np.array([o[7] for o in objs], np.int8), port_side=tuple(o[8] for o in objs),
        pin_obj=np.array(pin_obj, np.int64), pin_dx=np.array(pin_dx), pin_dy=np.array(pin_dy),
        pin_node=np.array(pin_node, np.int64),
        net_ptr=np.array(net_ptr, np.int64), net_pins=np.array(net_pins, np.int64),
        net_weight=np.array(net_weight), metadata=metadata)


def read_netlist_protobuf(path: str, name: str | None = None) -> Netlist:
    """Read the same format with ``google.protobuf.text_format`` (a message class built at
    run time: ``Netlist { repeated Node node }``, ``Node { name, repeated input, repeated
    Attr attr }``, ``Attr { key, value { f | placeholder | i | s } }``)."""
    from google.protobuf import text_format

    msg_cls = _proto_netlist_class()
    text = _open_text(path)
    msg = msg_cls()
    try:
        text_format.Parse(text, msg)
    except text_format.ParseError as e:
        raise NetlistError(f"{path}: {e}") from None

    def records():
        for k, node in enumerate(msg.node):
            attrs = {}
            for a in node.attr:
                which = a.value.WhichOneof("value")
                attrs[a.key] = float(getattr(a.value, which)) if which in ("f", "i") else getattr(a.value, which)
            yield (lambda k=k: _line_of_node(text, k)), node.name, list(node.input), attrs

    return build_netlist(records(), path, name)


_PROTO_CLASS = None


def _proto_netlist_class():
    global _PROTO_CLASS
    if _PROTO_CLASS is not None:
        return _PROTO_CLASS
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fdp = descriptor_pb2.FileDescriptorProto(name="sysworld_ct_netlist.proto", package="sysworld_ct")
    F = descriptor_pb2.FieldDescriptorProto
    value = fdp.message_type.add(name="Value")
    value.oneof_decl.add(name="value")
    for num_, (fname, ftype) in enumerate((("f", F.TYPE_FLOAT), ("placeholder", F.TYPE_STRING),
                                           ("i", F.TYPE_INT64), ("s", F.TYPE_BYTES)), 1):
        value.field.add(name=fname, number=num_, type=ftype, label=F.LABEL_OPTIONAL, oneof_index=0)
    attr = fdp.message_type.add(name="Attr")
    attr.field.add(name="key", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    attr.field.add(name="value", number=2, type=F.TYPE_MESSAGE, type_name=".sysworld_ct.Value",
                   label=F.LABEL_OPTIONAL)
    node = fdp.message_type.add(name="Node")
    node.field.add(name="name", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    node.field.add(name="input", number=2, type=F.TYPE_STRING, label=F.LABEL_REPEATED)
    node.field.add(name="attr", number=3, type=F.TYPE_MESSAGE, type_name=".sysworld_ct.Attr",
                   label=F.LABEL_REPEATED)
    top = fdp.message_type.add(name="Netlist")
    top.field.add(name="node", number=1, type=F.TYPE_MESSAGE, type_name=".sysworld_ct.Node",
                  label=F.LABEL_REPEATED)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    _PROTO_CLASS = message_factory.GetMessageClass(pool.FindMessageTypeByName("sysworld_ct.Netlist"))
    return _PROTO_CLASS


def write_netlist(path: str, nl: Netlist, x: np.ndarray | None = None, y: np.ndarray | None = None) -> None:
    """Write ``nl`` in circuit_training's text format (gzip if ``path`` ends in .gz), in
    node-index order, spelled as TILOS MacroPlacement's files (``MACRO`` / ``MACRO_PIN``
    for hard macros, ``macro`` / ``macro_pin`` for soft ones, ``PORT``; every pin with its
    absolute x, y). ``x``, ``y`` [O] override the object positions."""
    ox = nl.obj_x if x is None else x
    oy = nl.obj_y if y is None else y
    obj_of = nl.node_to_obj()
    pin_of = {int(n): i for i, n in enumerate(nl.pin_node)}
    sinks: dict = {}
    weight_of: dict = {}
    for k in range(nl.num_nets):
        a, b = nl.net_ptr[k], nl.net_ptr[k + 1]
        drv = int(nl.pin_node[nl.net_pins[a]])
        sinks[drv] = [nl.node_names[int(nl.pin_node[p])] for p in nl.net_pins[a + 1:b]]
        weight_of[drv] = float(nl.net_weight[k])

    def attr(key, val):
        v = f'placeholder: "{val}"' if isinstance(val, str) else f"f: {float(val)!r}"
        return f'  attr {{\n    key: "{key}"\n    value {{\n      {v}\n    }}\n  }}'

    out = []
    for nid, name in enumerate(nl.node_names):
        lines = ["node {", f'  name: "{name}"'] + [f'  input: "{s}"' for s in sinks.get(nid, [])]
        if nid in obj_of:
            o = obj_of[nid]
            k = nl.obj_kind[o]
            if k == PORT:
                lines += [attr("side", nl.port_side[o] or "LEFT"), attr("type", "PORT")]
            else:
                lines += [attr("height", nl.obj_height[o])]
                if k == HARD:
                    lines += [attr("orientation", ORIENTATIONS[int(nl.obj_orient[o])])]
                lines += [attr("type", "MACRO" if k == HARD else "macro"), attr("width", nl.obj_width[o])]
            lines += [attr("x", ox[o]), attr("y", oy[o])]
        else:
            p = pin_of[nid]
            o = int(nl.pin_obj[p])
            hard = nl.obj_kind[o] == HARD
            lines += [attr("macro_name", nl.obj_name[o]), attr("type", "MACRO_PIN" if hard else "macro_pin")]
            if nid in weight_of and weight_of[nid] != 1.0:
                lines.append(attr("weight", weight_of[nid]))
            lines += [attr("x", ox[o] + nl.pin_dx[p]), attr("x_offset", nl.pin_dx[p]),
                      attr("y", oy[o] + nl.pin_dy[p]), attr("y_offset", nl.pin_dy[p])]
        out.append("\n".join(lines + ["}"]))
    text = "\n".join(out) + "\n"
    if path.endswith(".gz"):
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        with open(path, "w") as f:
            f.write(text)
