"""Built-in benchmark graphs (TASO's evaluation set), built from the IR ops.

``BUILTIN_GRAPHS`` maps a name to a zero-argument builder; :func:`build_graph` builds one
by name. Every graph validates; op counts (compute nodes) are:

==============  =====  ==============================
name            ops    input
==============  =====  ==============================
bert            184    x [64, 1024]
inception_v3    313    image [1, 3, 299, 299]
nasnet_a        381    x [1, 128, 56, 56]
nasrnn          230    x0..x4 [1, 512]
resnet50        175    image [1, 3, 224, 224]
resnext50       175    image [1, 3, 224, 224]
squeezenet       65    image [1, 3, 224, 224]
vit             284    image [1, 3, 224, 224]
==============  =====  ==============================
"""
from __future__ import annotations

from typing import Callable

from systems_envs.graph.ir import Graph, GraphError
from systems_envs.graph.models.inception import inception_v3
from systems_envs.graph.models.nasnet import nasnet_a
from systems_envs.graph.models.nasrnn import nasrnn
from systems_envs.graph.models.resnet import resnet50, resnext50
from systems_envs.graph.models.squeezenet import squeezenet
from systems_envs.graph.models.transformer import bert, vit

BUILTIN_GRAPHS: dict[str, Callable[[], Graph]] = {
    "bert": bert,
    "inception_v3": inception_v3,
    "nasnet_a": nasnet_a,
    "nasrnn": nasrnn,
    "resnet50": resnet50,
    "resnext50": resnext50,
    "squeezenet": squeezenet,
    "vit": vit,
}


def build_graph(name: str) -> Graph:
    """Build the built-in graph ``name``; GraphError naming the known names if unknown."""
    try:
        builder = BUILTIN_GRAPHS[name]
    except KeyError:
        raise GraphError(f"unknown built-in graph {name!r} (known: {', '.join(sorted(BUILTIN_GRAPHS))})") from None
    return builder()


__all__ = ["BUILTIN_GRAPHS", "build_graph"]
