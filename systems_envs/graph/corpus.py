"""The fixed evaluation protocol of learned graph optimisation: which graphs train, which evaluate.

Folds (``FOLDS``):

* ``loo:<benchmark>`` for each of the eight built-in benchmark graphs (leave-one-out):
  train on the generated training corpus and the other seven benchmarks, evaluate on the
  eighth;
* ``generated``: train on the generated training corpus and all eight benchmarks,
  evaluate on the held-out generated graphs.

The generated training corpus is seeds ``0 .. per_family - 1`` of every family of
:mod:`systems_envs.graph.generator` (``per_family`` at most ``TRAIN_SEED_LIMIT``). The
held-out generated graphs are seeds ``HELDOUT_SEED_START .. HELDOUT_SEED_START +
heldout_per_family - 1`` of every family; they are in no fold's training list, so a figure
reported on them, or on a fold's left-out benchmark, is on graphs never trained on.

No leak, by name or by structure: a training list never holds an evaluation graph's name,
nor a graph with the same :func:`structure_hash` as an evaluation graph or as any held-out
generated graph (a hash blind to node ids and to weight and input names, so a renamed copy
counts as the same graph). A generated training graph that collides is dropped and named in
``Split.dropped``; :func:`check_split` re-checks a split from scratch.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib

from systems_envs.graph.generator import FAMILIES, graph_name
from systems_envs.graph.ir import Graph
from systems_envs.graph.models import BUILTIN_GRAPHS

BENCHMARKS: tuple[str, ...] = tuple(sorted(BUILTIN_GRAPHS))
FOLDS: tuple[str, ...] = tuple(f"loo:{b}" for b in BENCHMARKS) + ("generated",)
TRAIN_SEED_LIMIT = 10_000      # training seeds are below it ...
HELDOUT_SEED_START = 10_000    # ... held-out seeds at or above it
DEFAULT_PER_FAMILY = 16
DEFAULT_HELDOUT_PER_FAMILY = 4


class ProtocolError(ValueError):
    """A bad fold name or setting, or a split that leaks (one-line message)."""


@dataclasses.dataclass(frozen=True)
class Split:
    """One fold: graph names to train on and to evaluate on (``load_graph`` names), and the
    generated training graphs dropped because they equal an evaluation graph by structure."""

    fold: str
    train: tuple[str, ...]
    eval: tuple[str, ...]
    dropped: tuple[str, ...] = ()


def structure_hash(g: Graph) -> str:
    """Hash of a graph's structure: ops, attributes (names excluded), shapes and wiring.

    Equal for graphs that differ only in node ids, insertion order or the names of their
    inputs and weights (hex string, 32 characters)."""
    h: dict[int, bytes] = {}
    for nid in g.topo_order():
        n = g.nodes[nid]
        d = hashlib.blake2b(digest_size=16)
        attrs = tuple(kv for kv in n.attr_key() if kv[0] != "name")
        d.update(repr((n.op, attrs, n.shapes)).encode())
        for src, idx in n.inputs:
            d.update(h[src] + idx.to_bytes(2, "little"))
        h[nid] = d.digest()
    total = hashlib.blake2b(digest_size=16)
    for x in sorted(h.values()):
        total.update(x)
    total.update(b"|outputs|")
    for src, idx in g.outputs:
        total.update(h[src] + idx.to_bytes(2, "little"))
    return total.hexdigest()


@functools.lru_cache(maxsize=4096)
def _hash_of(name: str) -> str:
    from systems_envs.graph.load import load_graph

    return structure_hash(load_graph(name))


def generated_names(seeds, families=None) -> list[str]:
    """``gen:FAMILY:seed=N`` names, family-major, for ``seeds`` of ``families`` (default all)."""
    fams = list(FAMILIES) if families is None else list(families)
    unknown = [f for f in fams if f not in FAMILIES]
    if unknown:
        raise ProtocolError(f"unknown generated families {unknown} (known: {', '.join(FAMILIES)})")
    return [graph_name(f, s) for f in fams for s in seeds]


def training_corpus(per_family: int = DEFAULT_PER_FAMILY, families=None) -> list[str]:
    """The generated training graphs: seeds ``0 .. per_family - 1`` of each family."""
    if not 0 <= per_family <= TRAIN_SEED_LIMIT:
        raise ProtocolError(f"per_family must be in [0, {TRAIN_SEED_LIMIT}], got {per_family}")
    return generated_names(range(per_family), families)


def heldout_generated(heldout_per_family: int = DEFAULT_HELDOUT_PER_FAMILY, families=None) -> list[str]:
    """The held-out generated graphs: seeds from ``HELDOUT_SEED_START`` of each family."""
    if heldout_per_family < 1:
        raise ProtocolError(f"heldout_per_family must be >= 1, got {heldout_per_family}")
    return generated_names(range(HELDOUT_SEED_START, HELDOUT_SEED_START + heldout_per_family), families)


def split(fold: str, per_family: int = DEFAULT_PER_FAMILY, heldout_per_family: int = DEFAULT_HELDOUT_PER_FAMILY,
          families=None) -> Split:
    """The train / eval graph names of ``fold`` (one of ``FOLDS``; see the module docstring).

    Builds every graph once (to hash it; cached per name), so the default corpus takes a
    few seconds the first time."""
    if fold not in FOLDS:
        import difflib

        close = difflib.get_close_matches(fold, FOLDS, n=2)
        raise ProtocolError(f"unknown fold {fold!r}" + (f"; did you mean {', '.join(close)}?" if close else "")
                            + f" (folds: {', '.join(FOLDS)})")
    heldout = heldout_generated(heldout_per_family, families)
    if fold == "generated":
        evals, benches = heldout, list(BENCHMARKS)
    else:
        left_out = fold[len("loo:"):]
        evals, benches = [left_out], [b for b in BENCHMARKS if b != left_out]
    forbidden = {_hash_of(n) for n in set(evals) | set(heldout)}
    train, dropped = [], []
    for name in benches + training_corpus(per_family, families):
        (dropped if _hash_of(name) in forbidden else train).append(name)
    out = Split(fold, tuple(train), tuple(evals), tuple(dropped))
    check_split(out, heldout)
    return out


def check_split(s: Split, never_train=()) -> None:
    """Raise ProtocolError if ``s`` trains on an evaluation graph or on a graph in
    ``never_train`` (held-out generated graphs), by name or by structure hash."""
    banned = set(s.eval) | set(never_train)
    same_name = sorted(set(s.train) & banned)
    if same_name:
        raise ProtocolError(f"fold {s.fold!r} leaks: trains on held-out graph(s) {same_name[:3]}")
    by_hash = {_hash_of(n): n for n in banned}
    clash = [(t, by_hash[_hash_of(t)]) for t in s.train if _hash_of(t) in by_hash]
    if clash:
        raise ProtocolError(f"fold {s.fold!r} leaks: training graph {clash[0][0]!r} has the structure of "
                            f"held-out graph {clash[0][1]!r}" + (f" (and {len(clash) - 1} more)" if len(clash) > 1 else ""))
    if len(set(s.train)) != len(s.train):
        raise ProtocolError(f"fold {s.fold!r}: duplicate training names")


__all__ = ["BENCHMARKS", "FOLDS", "HELDOUT_SEED_START", "ProtocolError", "Split", "check_split",
           "generated_names", "heldout_generated", "split", "structure_hash", "training_corpus"]
