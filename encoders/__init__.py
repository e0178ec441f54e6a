"""V: jraph graph encoders -> (node embeddings, global latent).

Every encoder is a Flax linen module with the functional interface

    enc = make_encoder(name, width=..., depth=..., latent_dim=..., ...)
    params = enc.init(key, graphs)                 # graphs: a GraphsTuple (e.g. batch_graphs)
    node_embeddings, latent = enc.apply(params, graphs)
        # node_embeddings float32 [total_nodes, width]; latent float32 [n_graph, latent_dim]

Rows belonging to padding (see `encoders.graphs.node_mask` / `graph_mask`) are computed but
meaningless; real rows do not depend on padding. Names: "gn", "gat", "gcn".
"""
from __future__ import annotations

import difflib

import flax.linen as nn

from encoders.gat import GATEncoder
from encoders.gcn import GCNEncoder
from encoders.gn import GNEncoder
from encoders.graphs import (DEFAULT_BUCKETS, Batch, Buckets, batch_graphs, batch_observations, edge_mask,
                             graph_mask, node_mask, to_graphs_tuple)

ENCODERS: dict[str, type[nn.Module]] = {"gn": GNEncoder, "gat": GATEncoder, "gcn": GCNEncoder}


def make_encoder(name: str, **cfg) -> nn.Module:
    """Build the encoder registered as ``name`` with config fields ``cfg`` (module attributes)."""
    if name not in ENCODERS:
        close = difflib.get_close_matches(name, ENCODERS, n=2)
        raise ValueError(f"unknown encoder {name!r}; valid: {sorted(ENCODERS)}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    cls = ENCODERS[name]
    fields = {f for f in cls.__dataclass_fields__ if f not in ("parent", "name")}
    bad = sorted(set(cfg) - fields)
    if bad:
        raise ValueError(f"encoder {name!r}: unknown config fields {bad}; valid: {sorted(fields)}")
    return cls(**cfg)


__all__ = ["make_encoder", "ENCODERS", "GNEncoder", "GATEncoder", "GCNEncoder", "Buckets", "DEFAULT_BUCKETS",
           "Batch", "to_graphs_tuple", "batch_graphs", "batch_observations", "node_mask", "edge_mask", "graph_mask"]
