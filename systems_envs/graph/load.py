"""One entry point to get a graph: a built-in name, a TASO ``.model`` file or an ``.onnx`` file."""
from __future__ import annotations

from pathlib import Path

from systems_envs.graph.ir import Graph, GraphError


def load_graph(spec: str | Path, seed: int = 0) -> Graph:
    """Load ``spec``: a built-in name (see ``systems_envs.graph.models.BUILTIN_GRAPHS``), a
    generated graph ``gen:FAMILY:seed=N``, a path ending in ``.model`` (TASO export) or ``.onnx``.

    ``seed`` is accepted for TASO files, whose weights carry only shapes: their values are
    filled by the executor from its own seed and the weight name (see
    ``systems_envs.graph.executor.source_value``), so the graph and its hash do not depend on it.
    Raises GraphError with a one-line message naming the input on any problem.
    """
    from systems_envs.graph.models import BUILTIN_GRAPHS, build_graph

    text = str(spec)
    if text in BUILTIN_GRAPHS:
        return build_graph(text)
    if text.startswith("gen:"):  # generated graph, gen:FAMILY:seed=N (systems_envs.graph.generator)
        from systems_envs.graph.generator import load_generated

        return load_generated(text)
    path = Path(text)
    suffix = path.suffix.lower()
    if suffix not in (".model", ".onnx"):
        raise GraphError(f"{text!r}: not a built-in graph (known: {', '.join(sorted(BUILTIN_GRAPHS))}) "
                         "and not a .model or .onnx file")
    if not path.is_file():
        raise GraphError(f"{text!r}: no such file")
    if suffix == ".model":
        from systems_envs.graph.taso_model import load_taso_model

        return load_taso_model(path, seed=seed)
    from systems_envs.graph.onnx_io import import_onnx

    return import_onnx(path)
