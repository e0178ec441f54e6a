"""The models the runtime benchmarks run: built-in graphs and PyTorch-exported zoo models.

A :class:`BenchModel` holds the IR graph to rewrite and the *original* ONNX model to time
against: the graph exported unchanged for a built-in graph, the very file PyTorch wrote
for a zoo model. Zoo models need the optional torch extra; without it they are skipped
with a message. A model that cannot be exported or imported is reported, not fatal.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from systems_envs.graph.ir import Graph, GraphError


@dataclasses.dataclass
class BenchModel:
    """``name`` (``builtin:<graph>`` or ``zoo:<model>``), its IR graph and its original ONNX bytes."""

    name: str
    graph: Graph
    original: bytes


def parse_names(text: str, known, flag: str) -> list[str]:
    """``all``, ``none`` or a comma-separated subset of ``known``; ValueError naming ``flag`` otherwise."""
    if text == "all":
        return list(known)
    if text in ("none", ""):
        return []
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"{flag}: unknown name(s) {', '.join(unknown)} (known: {', '.join(known)}, all, none)")
    return names


def zoo_names() -> tuple[str, ...]:
    from systems_envs.graph.torch_zoo import ZOO_NAMES

    return ZOO_NAMES


def load_models(graphs: list[str], zoo: list[str], workdir: Path, opset: int = 18,
                log: Callable[[str], None] = print) -> list[BenchModel]:
    """Build the built-in ``graphs`` and export + import the ``zoo`` models (files under ``workdir``)."""
    from systems_envs.graph.models import build_graph
    from systems_envs.graph.onnx_io import export_onnx, import_onnx

    out = [BenchModel(f"builtin:{n}", build_graph(n), export_onnx(build_graph(n)).SerializeToString())
           for n in graphs]
    if not zoo:
        return out
    from systems_envs.graph.torch_zoo import ZooError, build, export_model

    workdir.mkdir(parents=True, exist_ok=True)
    for n in zoo:
        path = workdir / f"{n}.onnx"
        try:
            if not path.is_file():
                export_model(build(n), path, opset=opset, dynamo=True)
            g = import_onnx(path)
        except (ZooError, GraphError) as e:
            log(f"zoo:{n}: skipped: {str(e).splitlines()[0]}")
            continue
        out.append(BenchModel(f"zoo:{n}", g, path.read_bytes()))
    return out
