"""Loaders of TASO's 133 generated substitutions, as :class:`PatternSpec` / :class:`PatternRule`.

Two renderings of the same rules ship under ``systems_envs/data/rules/`` (FORMATS.md
Parts 2 and 3):

- ``taso_graph_subst.pb``: TASO's ``GraphSubst.RuleCollection`` (proto2). Decoded here by
  a small reader of the protobuf wire format (varints and length-delimited fields only).
- ``tensat_converted.txt`` (120 one-output rules) and ``tensat_converted_multi.txt``
  (13 two-output rules, two lines each): Tensat's S-expressions.

Both are normalized with :func:`~systems_envs.rewrite.pattern.canonical`, so the same rule
loaded from either source is the same :class:`PatternSpec`. Rule names follow the pb's
order (``taso_000`` .. ``taso_132``); the text loader returns the 120 single rules, then
the 13 multi rules, named ``tensat_000`` ...
"""
from __future__ import annotations

import re
from pathlib import Path

from systems_envs.rewrite.pattern import (
    AXIS, CONCAT, CONV2D, EW_ADD, EW_MUL, MATMUL, NUM_OUTPUTS, OP_NAMES, PARAMS, RELU, SPLIT,
    PatOp, PatternRule, PatternSpec, UnsupportedRuleError, canonical,
)

DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "rules"
PB_PATH = DATA_DIR / "taso_graph_subst.pb"
TEXT_PATH = DATA_DIR / "tensat_converted.txt"
TEXT_MULTI_PATH = DATA_DIR / "tensat_converted_multi.txt"


# ----------------------------------------------------------------------------- protobuf wire format


def _varint(buf: bytes, i: int, where: str) -> tuple[int, int]:
    result = shift = 0
    while True:
        if i >= len(buf):
            raise ValueError(f"{where}: truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return result, i
        if shift > 70:
            raise ValueError(f"{where}: varint longer than 10 bytes")


def _fields(buf: bytes, where: str) -> list[tuple[int, int | bytes]]:
    """``[(field number, value)]`` of one message: ints (as signed int32/64) or raw bytes."""
    out, i = [], 0
    while i < len(buf):
        key, i = _varint(buf, i, where)
        field, wire = key >> 3, key & 7
        if wire == 0:
            v, i = _varint(buf, i, where)
            if v >= 1 << 63:
                v -= 1 << 64
        elif wire == 2:
            n, i = _varint(buf, i, where)
            if i + n > len(buf):
                raise ValueError(f"{where}: field {field} runs past the end of the message")
            v, i = buf[i:i + n], i + n
        else:
            raise ValueError(f"{where}: unsupported wire type {wire} (field {field})")
        out.append((field, v))
    return out


def _required(fields, names: dict[int, str], where: str) -> dict[str, int]:
    got = {names[f]: v for f, v in fields if f in names}
    missing = [n for n in names.values() if n not in got]
    if missing:
        raise ValueError(f"{where}: missing required field(s) {', '.join(missing)}")
    return got


def _decode_op(buf: bytes, where: str) -> PatOp:
    fields = _fields(buf, where)
    (typ,) = [v for f, v in fields if f == 1] or [None]
    if typ is None:
        raise ValueError(f"{where}: operator without a type")
    inputs = tuple((t["opId"], t["tsId"]) for t in
                   (_required(_fields(v, where), {1: "opId", 2: "tsId"}, where) for f, v in fields if f == 2))
    params = dict((p["key"], p["value"]) for p in
                  (_required(_fields(v, where), {1: "key", 2: "value"}, where) for f, v in fields if f == 3))
    if typ not in PARAMS:
        raise UnsupportedRuleError(f"{where}: unsupported TASO op type {typ}")
    return PatOp(typ, inputs, tuple(sorted((k, params[k]) for k in PARAMS[typ] if k in params)))


def load_pb_specs(path: str | Path = PB_PATH) -> list[PatternSpec]:
    """Decode a TASO ``graph_subst.pb`` into canonical specs (file order)."""
    path = Path(path)
    data = path.read_bytes()
    specs = []
    for r, (field, rule) in enumerate(_fields(data, str(path))):
        if field != 1 or not isinstance(rule, bytes):
            raise ValueError(f"{path}: unexpected top-level field {field}")
        where = f"{path.name} rule {r}"
        fields = _fields(rule, where)
        src = tuple(_decode_op(v, f"{where} srcOp") for f, v in fields if f == 1)
        dst = tuple(_decode_op(v, f"{where} dstOp") for f, v in fields if f == 2)
        names = {1: "srcOpId", 2: "dstOpId", 3: "srcTsId", 4: "dstTsId"}
        mapped = tuple((m["srcOpId"], m["srcTsId"], m["dstOpId"], m["dstTsId"]) for m in
                       (_required(_fields(v, where), names, where) for f, v in fields if f == 3))
        try:
            specs.append(canonical(PatternSpec(src, dst, mapped)))
        except UnsupportedRuleError as e:
            raise ValueError(f"{where}: {e}") from None
    return specs


# ----------------------------------------------------------------------------- Tensat text

_TEXT_OPS = {"conv2d": CONV2D, "relu": RELU, "concat": CONCAT, "ewadd": EW_ADD, "ewmul": EW_MUL, "matmul": MATMUL}
_VAR = re.compile(r"\?input_(\d+)$")


def _parse_sexpr(text: str, where: str):
    tokens = re.findall(r"\(|\)|[^\s()]+", text)
    pos = 0

    def parse():
        nonlocal pos
        if pos >= len(tokens):
            raise ValueError(f"{where}: unexpected end of expression")
        tok = tokens[pos]
        pos += 1
        if tok == ")":
            raise ValueError(f"{where}: unexpected ')'")
        if tok != "(":
            return tok
        items = []
        while pos < len(tokens) and tokens[pos] != ")":
            items.append(parse())
        if pos >= len(tokens):
            raise ValueError(f"{where}: missing ')'")
        pos += 1
        return items

    expr = parse()
    if pos != len(tokens):
        raise ValueError(f"{where}: trailing tokens after the expression")
    return expr


def _build(expr, ops: list[PatOp], where: str) -> tuple[int, int]:
    """Append the ops of ``expr`` (post-order) to ``ops``; return its ``(op id or variable, ts)``."""
    if isinstance(expr, str):
        m = _VAR.match(expr)
        if not m:
            raise ValueError(f"{where}: expected a variable ?input_N, got {expr!r}")
        return -int(m.group(1)), 0
    if not expr or not isinstance(expr[0], str):
        raise ValueError(f"{where}: malformed application {expr!r}")
    head, args = expr[0], expr[1:]
    if head in ("split_0", "split_1"):
        inner = args[0] if len(args) == 1 else None
        if not (isinstance(inner, list) and len(inner) == 3 and inner[0] == "split"):
            raise ValueError(f"{where}: {head} must wrap (split AXIS x)")
        x = _build(inner[2], ops, where)
        ops.append(PatOp(SPLIT, (x,), tuple(sorted({AXIS: int(inner[1]), NUM_OUTPUTS: 2}.items()))))
        return len(ops) - 1, int(head[-1])
    if head not in _TEXT_OPS:
        raise UnsupportedRuleError(f"{where}: unsupported operator {head!r}")
    typ = _TEXT_OPS[head]
    keys = PARAMS[typ]
    if len(args) < len(keys) + 1:
        raise ValueError(f"{where}: {head} needs {len(keys)} integer parameter(s) and inputs")
    try:
        params = tuple(sorted(zip(keys, (int(a) for a in args[:len(keys)]))))
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {head} parameters must be integers, got {args[:len(keys)]}") from None
    inputs = tuple(_build(a, ops, where) for a in args[len(keys):])
    ops.append(PatOp(typ, inputs, params))
    return len(ops) - 1, 0


def _text_spec(lines: list[str], where: str) -> PatternSpec:
    src: list[PatOp] = []
    dst: list[PatOp] = []
    mapped = []
    for k, line in enumerate(lines):
        if line.count("=>") != 1:
            raise ValueError(f"{where}: expected exactly one '=>' in {line!r}")
        lhs, rhs = line.split("=>")
        so, st = _build(_parse_sexpr(lhs, where), src, where)
        do, dt = _build(_parse_sexpr(rhs, where), dst, where)
        if so < 0 or do < 0:
            raise ValueError(f"{where}: a side of a rule is a bare variable")
        mapped.append((so, st, do, dt))
    try:
        return canonical(PatternSpec(tuple(src), tuple(dst), tuple(mapped)))
    except UnsupportedRuleError as e:
        raise ValueError(f"{where}: {e}") from None


def load_text_specs(single: str | Path = TEXT_PATH, multi: str | Path = TEXT_MULTI_PATH) -> list[PatternSpec]:
    """Parse Tensat's rule files: the single rules (one per line), then the multi rules (line pairs)."""
    specs = []
    for path, per in ((Path(single), 1), (Path(multi), 2)):
        lines = path.read_text().split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        if len(lines) % per:
            raise ValueError(f"{path}: {len(lines)} lines is not a multiple of {per}")
        for i in range(0, len(lines), per):
            specs.append(_text_spec(lines[i:i + per], f"{path.name} line {i + 1}"))
    return specs


# ----------------------------------------------------------------------------- rules

_VERIFIED_CACHE: dict[str, dict] = {}


def load_taso_rules(verified_only: bool = True, source: str = "pb") -> list[PatternRule]:
    """TASO's generated rules as :class:`PatternRule` (family ``"taso"``).

    Args:
      verified_only: keep only rules that :func:`systems_envs.rewrite.verify.verify_rule`
        accepts (the verification runs once per process and is cached in memory; ~seconds).
      source: ``"pb"`` (names ``taso_000``..) or ``"text"`` (names ``tensat_000``..).
    """
    if source == "pb":
        specs, prefix = load_pb_specs(), "taso"
    elif source == "text":
        specs, prefix = load_text_specs(), "tensat"
    else:
        raise ValueError(f"source must be 'pb' or 'text', got {source!r}")
    rules = [PatternRule(s, f"{prefix}_{i:03d}") for i, s in enumerate(specs)]
    if not verified_only:
        return rules
    report = verification_report(source)
    return [r for r in rules if report[r.name].ok]


def verification_report(source: str = "pb") -> dict:
    """``{rule name: VerifyResult}`` for every rule of ``source`` (cached in memory)."""
    if source not in _VERIFIED_CACHE:
        from systems_envs.rewrite.verify import verify_rule

        rules = load_taso_rules(verified_only=False, source=source)
        _VERIFIED_CACHE[source] = {r.name: verify_rule(r.spec) for r in rules}
    return _VERIFIED_CACHE[source]


__all__ = ["load_pb_specs", "load_text_specs", "load_taso_rules", "verification_report", "OP_NAMES"]
