"""Numerical verification of pattern rules with the float64 reference executor.

For each *shape instantiation* (sizes of batch ``B``, 2-D feature ``D``, channels ``C``,
height ``H`` and width ``W``), every pattern variable gets the shape of its TASO role
(FORMATS.md 2.5, generator.cc; BATCHSIZE = B):

=======  =============  =====================
N        role           shape
=======  =============  =====================
1-3      x1-x3          [B, D]
4-6      w1-w3          [D, D]
7-9      i1-i3          [B, C, H, W]
10-12    w4-w6          [C, C, 3, 3]
13-15    w7-w9          [C, C, 1, 3]
16-18    w10-w12        [C, C, 3, 1]
19       w13            [C, 1, 3, 3]  (depthwise)
=======  =============  =====================

The source pattern and the destination template are built as standalone IR graphs over
the variables (:func:`~systems_envs.rewrite.pattern.add_template`), run on the same
random float64 values, and their mapped outputs compared. A rule verifies if every
instantiation where both sides type-check agrees to ``rtol`` (relative to the output's
largest magnitude) and at least one does. If no instantiation type-checks with the
table roles, variables whose table rank contradicts their use are tried in other roles of
the right rank (see :func:`verify_rule`). Verifying all 133 rules takes ~0.3-0.6 s.
"""
from __future__ import annotations

import dataclasses
import itertools
from typing import Mapping, Sequence

import numpy as np

from systems_envs.graph.executor import execute
from systems_envs.graph.ir import Graph, GraphError
from systems_envs.graph.ops import Shape, ShapeError
from systems_envs.rewrite.pattern import CONCAT, CONV2D, NUMDIM, PatternSpec, UnsupportedRuleError, add_template


# Roles of pattern variables (FORMATS.md 2.5): name -> shape as a function of the sizes.
ROLE_SHAPES = {
    "x": lambda s: (s.B, s.D),
    "w": lambda s: (s.D, s.D),
    "i": lambda s: (s.B, s.C, s.H, s.W),
    "w33": lambda s: (s.C, s.C, 3, 3),
    "w13": lambda s: (s.C, s.C, 1, 3),
    "w31": lambda s: (s.C, s.C, 3, 1),
    "wdw": lambda s: (s.C, 1, 3, 3),
}
RANK_ROLES = {2: ("x", "w"), 4: ("i", "w33", "w13", "w31", "wdw")}


def table_role(n: int) -> str:
    """TASO generator role of variable ``?input_n``; UnsupportedRuleError for an unknown one."""
    for hi, role in ((3, "x"), (6, "w"), (9, "i"), (12, "w33"), (15, "w13"), (18, "w31"), (19, "wdw")):
        if 1 <= n <= hi:
            return role
    raise UnsupportedRuleError(f"pattern variable ?input_{n} has no known role/shape")


@dataclasses.dataclass(frozen=True)
class Sizes:
    """One shape instantiation: batch B, 2-D feature D, channels C, height H, width W."""

    B: int
    D: int
    C: int
    H: int
    W: int

    def var_shape(self, n: int, roles: Mapping[int, str] | None = None) -> Shape:
        """Shape of variable ``?input_n``: its role in ``roles`` if given, else its table role."""
        role = (roles or {}).get(n) or table_role(n)
        return ROLE_SHAPES[role](self)


# TASO's own sizes first, then scaled ones (different batch/features/channels/spatial dims)
# and one "square" instantiation (B = D) under which more rules type-check.
INSTANTIATIONS: tuple[Sizes, ...] = (
    Sizes(B=2, D=4, C=4, H=5, W=5),
    Sizes(B=3, D=5, C=6, H=7, W=6),
    Sizes(B=4, D=3, C=2, H=4, W=6),
    Sizes(B=3, D=3, C=3, H=6, W=4),
)


@dataclasses.dataclass(frozen=True)
class VerifyResult:
    """Outcome for one rule. ``checked``: instantiations compared; ``max_err``: worst relative error."""

    ok: bool
    reason: str
    checked: int = 0
    max_err: float = 0.0


def build_side(spec: PatternSpec, side: str, sizes: Sizes, out_shapes=None,
               roles: Mapping[int, str] | None = None) -> Graph:
    """A standalone graph of one side over inputs ``input_N`` (one per variable); outputs = mapped outputs.

    Raises ShapeError / GraphError if the side does not type-check at these sizes.
    """
    g = Graph(f"{side}")
    binding = {v: (g.input(f"input_{-v}", sizes.var_shape(-v, roles)), 0) for v in sorted(spec.variables("src"), reverse=True)}
    ops = spec.src if side == "src" else spec.dst
    ids = add_template(g, ops, binding, out_shapes)
    if side == "src":
        g.set_outputs([(ids[so], st) for so, st, _, _ in spec.mapped])
    else:
        g.set_outputs([(ids[do], dt) for _, _, do, dt in spec.mapped])
    return g


def verify_rule(spec: PatternSpec, instantiations: Sequence[Sizes] = INSTANTIATIONS,
                rtol: float = 1e-9, seed: int = 0) -> VerifyResult:
    """Check that ``spec``'s two sides compute the same mapped outputs (see module doc).

    Variables take their table roles. If no instantiation type-checks that way, the
    variables whose table rank contradicts the pattern (a concat's NUMDIM, a conv
    operand) are given other roles of the required rank, the first assignment that
    type-checks is used, and the reason says so. (8 of TASO's rules use ?input_4/5 as 4-D
    weights, so the committed pb was not produced with exactly the table's numbering.)
    """
    res = _verify_with_roles(spec, instantiations, rtol, seed, None)
    if res.ok or not res.reason.startswith("no valid shape instantiation"):
        return res
    for roles in _alternative_roles(spec):
        alt = _verify_with_roles(spec, instantiations, rtol, seed, roles)
        if alt.checked or alt.reason.startswith("numerical"):
            note = ", ".join(f"?input_{n} as {r} {ROLE_SHAPES[r](instantiations[0])}" for n, r in sorted(roles.items()))
            return dataclasses.replace(alt, reason=f"{alt.reason} (with {note})")
    return res


def required_ranks(spec: PatternSpec) -> dict[int, int]:
    """Rank each variable must have by its uses in the source pattern: ``{n: rank}`` (partial)."""
    out: dict[int, int] = {}
    for op in spec.src:
        for o, _ in op.inputs:
            if o < 0 and op.type == CONCAT:
                out[-o] = op.p(NUMDIM)
            elif o < 0 and op.type == CONV2D:
                out[-o] = 4
    return out


def _alternative_roles(spec: PatternSpec):
    """Role assignments for the variables whose table rank contradicts :func:`required_ranks`."""
    bad = {n: r for n, r in required_ranks(spec).items()
           if len(ROLE_SHAPES[table_role(n)](INSTANTIATIONS[0])) != r and r in RANK_ROLES}
    names = sorted(bad)
    for combo in itertools.product(*(RANK_ROLES[bad[n]] for n in names)):
        yield dict(zip(names, combo))


def _verify_with_roles(spec, instantiations, rtol, seed, roles) -> VerifyResult:
    checked, worst, why_not = 0, 0.0, []
    for k, sizes in enumerate(instantiations):
        try:
            src = build_side(spec, "src", sizes, roles=roles)
        except UnsupportedRuleError as e:
            return VerifyResult(False, f"unsupported: {e}")
        except (ShapeError, GraphError) as e:
            why_not.append(f"{sizes}: src does not type-check ({e})")
            continue
        out_shapes = {(do, dt): src.shape(src.outputs[i]) for i, (_, _, do, dt) in enumerate(spec.mapped)}
        try:
            dst = build_side(spec, "dst", sizes, out_shapes, roles=roles)
        except UnsupportedRuleError as e:
            return VerifyResult(False, f"unsupported: {e}")
        except (ShapeError, GraphError) as e:
            why_not.append(f"{sizes}: dst does not type-check ({e})")
            continue
        rng = np.random.default_rng([seed, k])
        feeds = {n.attrs["name"]: rng.standard_normal(n.shape) for n in src.inputs}
        a = execute(src, feeds, dtype=np.float64)
        b = execute(dst, feeds, dtype=np.float64)
        checked += 1
        for i, (x, y) in enumerate(zip(a, b)):
            err = float(np.max(np.abs(x - y))) / max(1.0, float(np.max(np.abs(x))))
            worst = max(worst, err)
            if not err <= rtol:
                return VerifyResult(False, f"numerical mismatch at {sizes}, output {i}: max relative error {err:.3g}",
                                    checked, worst)
    if checked == 0:
        return VerifyResult(False, "no valid shape instantiation: " + "; ".join(why_not[:2]))
    return VerifyResult(True, f"agrees on {checked}/{len(instantiations)} instantiations", checked, worst)
