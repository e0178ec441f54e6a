"""Outcome model for sparse placement rewards: ``score(params, placed) -> predicted final reward``.

Placement episodes (``DevicePlacement-v0``, ``MemoryPlacement-v0``) pay one reward, at the
end: the simulated speedup of the finished placement. The world model's per-step reward head
predicts it hardly better than the mean, so the imagined environment asks this model instead
(`worldmodels.imagined_env`): it scores the placed graph itself, the graph with the
assignment written into its node features, as the real environment's final observation
shows it.

Architecture (and why)
  * Input: a `PlacedGraph`, the real environment's observation (node features with the
    assignment one-hot per node: device for DevicePlacement, weight and activation level
    for MemoryPlacement; edge features) padded to a fixed node / edge capacity, so one
    jitted function scores any batch and the imagined env can vmap it.
  * Explicit assignment features (`assignment_features`, computed inside the model from the
    node and edge features by segment sums and max-plus message passing over the edges, so
    they exist for imagined assignments too): a placement's cost is about per-device load and
    communication across edges, which a few rounds of learned message passing average away.
    Device: the share of compute (cost on the fastest device) per device, sorted (gpu
    presets are homogeneous); the share of bytes and of edges crossing devices and the
    per-device cut bytes, sorted; and, as log speedups over the serial time, three critical
    paths: the graph's own, with transfers on cut edges (the device set's mean link latency
    and bandwidth, `Layout.cols`), and with in-order device streams as well (an op also
    waits for the previous op placed on its device, the simulator's program-order streams,
    without its link contention or memory), plus the max-load bound. Memory: the share of
    weight bytes, activation bytes written and activation bytes read (over edges, at the
    producer's level) per level, and log sizes. The model still has to learn how they
    combine (link contention, bandwidths of levels it is never told, per-layer maxima).
  * A per-node MLP over the raw node features (op type, sizes, assignment one-hots), pooled
    per graph by sum (time-like quantities add up over nodes), mean and max, then an MLP over
    the pooled vector and the features -> one scalar. Optionally ``depth`` Graph Network
    blocks (`encoders.gn.GNBlock`: edge, node and global updates, the globals initialised from
    the features) before the pooling. Measured on DevicePlacement-v0 (README): a GN of depth
    2 without the explicit features reached a within-graph Spearman of only 0.76 on held-out
    placements; the features with the node MLP reached 0.96, and adding 2 GN blocks to them
    gave the same 0.96 at about 3x the training time, so the default is ``depth`` 0.
  * Target: log(final reward) (rewards are speedups over a per-graph reference, the best
    single device or the all-slowest mapping, so they are already normalised per graph;
    the log makes memory placement's heavy tail, 1x-17x, additive), standardised by the
    training set's mean and std. Invalid (out-of-memory) episodes are left out: their
    reward is a fixed penalty, not an outcome to rank. With rewards that are not all
    positive the target is the reward itself.
  * Loss: squared error plus ``rank_coef`` x a pairwise logistic (RankNet) loss over the
    pairs of placements of the same graph in a batch (what a controller needs is the ordering
    of its candidate placements). Measured (README): with the features, the ranking loss
    (``rank_coef`` 1) left the within-graph Spearman unchanged (device 0.962 both ways,
    memory 0.997 vs 0.996) and made the MAE 1.8x (device) to 3.3x (memory) worse, because it
    competes with the regression for the same output; so the default is 0, regression only,
    and the ranking loss stays available.
  * A small ensemble (``members``, vmapped; different initialisations, same batches): the
    score is the members' mean in target space, their std an uncertainty
    (`OutcomeModel.score_with_std`).

``MacroPlacement-v0`` (`macro_layout`, `macro_features`, `macro_placement_set`): the placed
graph is the environment's finished observation (positions of every macro as node features);
the explicit features estimate wirelength, density and congestion on a fixed grid over the unit
canvas; the target is the reward (-proxy cost) itself. An action there is a cell of the
netlist's own grid and soft macros are placed after the last one, so `assign` does not apply:
the model scores finished placements (measured fidelity in the README).

Partial placements (unplaced nodes) are valid input, but the model is trained on finished
ones only; the imagined environment scores the final assignment.
"""
from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph
import numpy as np
import optax

from encoders.gn import GNBlock
from encoders.layers import MLP, edge_graph_index, node_graph_index, segment_max0, segment_mean

DEVICE, MEMORY, MACRO = "device", "memory", "macro"
#: grid (per side, over the unit canvas) of the macro-placement features (`macro_features`)
MACRO_GRID = 24


# ----------------------------------------------------------------------------- layout


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where a placement environment's observation holds the assignment (F node features).

    kind: ``device`` | ``memory``; n_actions: the env's actions; chunk: nodes assigned per
    step (node i is assigned at step i // chunk); action_cols: float32 [n_actions, F], the
    features an assigned node gets for each action; clear_cols: bool [F], the columns an
    assignment resets (assignment one-hots, unplaced flags, is-next); unplaced_col: the
    column that is 1 on an unassigned node; num_levels: D devices or M memory levels;
    cols: named feature columns for `assignment_features` (device: ``cost`` log1p us on the
    fastest device, ``assign`` first device column, and the device set's mean link
    ``latency_us`` and ``us_per_mb``; memory: ``flops`` log1p MFLOP,
    ``w_bytes``/``a_bytes`` log1p MB, ``w_level``/``a_level`` first level column)."""

    kind: str
    n_actions: int
    chunk: int
    action_cols: np.ndarray
    clear_cols: np.ndarray
    unplaced_col: int
    num_levels: int
    cols: dict

    @property
    def num_features(self) -> int:
        return int(self.action_cols.shape[1])

    def to_json(self) -> dict:
        return {"kind": self.kind, "n_actions": self.n_actions, "chunk": self.chunk,
                "action_cols": self.action_cols.tolist(), "clear_cols": self.clear_cols.tolist(),
                "unplaced_col": self.unplaced_col, "num_levels": self.num_levels, "cols": dict(self.cols)}

    @classmethod
    def from_json(cls, d: dict) -> "Layout":
        return cls(d["kind"], int(d["n_actions"]), int(d["chunk"]), np.asarray(d["action_cols"], np.float32),
                   np.asarray(d["clear_cols"], bool), int(d["unplaced_col"]), int(d["num_levels"]), dict(d["cols"]))


def layout_of(env) -> Layout:
    """The `Layout` of a ``DevicePlacementEnv`` (chunked groups only) or ``MemoryPlacementEnv``."""
    env = getattr(env, "unwrapped", env)
    from systems_envs.placement.env import DevicePlacementEnv
    from systems_envs.placement.memory_env import MemoryPlacementEnv

    if isinstance(env, DevicePlacementEnv):
        if env.hint is not None:
            raise ValueError("outcome model: DevicePlacement with a hint has relative actions; "
                             "use --loop.outcome.enabled false")
        n, D = env.cg.n, env.cg.num_devices
        chunk = len(env.members[0])
        if not np.array_equal(env.group_of, np.arange(n) // chunk):
            raise ValueError("outcome model: DevicePlacement groups must be chunks of consecutive ops "
                             "(groups=None or an int)")
        F = env._base.shape[1]
        act = np.zeros((D, F), np.float32)
        act[np.arange(D), env._dev_col + np.arange(D)] = 1.0
        clear = np.zeros(F, bool)
        clear[env._dev_col:env._next_col + 1] = True
        off = ~np.eye(D, dtype=bool)
        links = {"latency_us": float(env.cg.devices.latency[off].mean() * 1e6) if D > 1 else 0.0,
                 "us_per_mb": float((1e12 / env.cg.devices.bandwidth[off]).mean()) if D > 1 else 0.0}
        return Layout(DEVICE, D, chunk, act, clear, env._unplaced_col, D,
                      {"cost": env._dev_col - 2, "assign": env._dev_col, **links})
    if isinstance(env, MemoryPlacementEnv):
        M, F = env.M, env._base.shape[1]
        act = np.zeros((M * M, F), np.float32)
        w, a = np.divmod(np.arange(M * M), M)
        act[np.arange(M * M), env._wcol + w] = 1.0
        act[np.arange(M * M), env._acol + a] = 1.0
        clear = np.zeros(F, bool)
        clear[env._wcol:env._next + 1] = True
        k = env._wcol - 3
        return Layout(MEMORY, M * M, 1, act, clear, env._wcol + M, M,
                      {"flops": k, "w_bytes": k + 1, "a_bytes": k + 2, "w_level": env._wcol, "a_level": env._acol})
    from systems_envs.chip.env import MacroPlacementEnv

    if isinstance(env, MacroPlacementEnv):
        return macro_layout(env.max_cells)
    raise ValueError(f"outcome model: no assignment layout for environment {type(env).__name__} "
                     "(DevicePlacement-v0, MemoryPlacement-v0 and MacroPlacement-v0 only)")


def macro_layout(n_actions: int, grid: int = MACRO_GRID) -> Layout:
    """The `Layout` of ``MacroPlacement-v0`` observations (`systems_envs.chip.env`, 10 node
    features). It is for scoring finished placements only: an action puts the current macro
    on a cell of its netlist's own grid and the soft macros are placed by force-directed
    placement afterwards, so an assignment is not a fixed feature row (``action_cols`` is
    empty and `assign` refuses this layout). ``cols`` names the feature columns
    `macro_features` reads and its ``grid``."""
    from systems_envs.chip.env import NODE_FEATURES

    cols = {"is_port": 0, "is_hard": 1, "is_soft": 2, "width": 3, "height": 4, "placed": 5, "x": 6, "y": 7,
            "grid": int(grid)}
    clear = np.zeros(NODE_FEATURES, bool)
    clear[[5, 6, 7, 8]] = True
    return Layout(MACRO, int(n_actions), 1, np.zeros((0, NODE_FEATURES), np.float32), clear, -1, 0, cols)


def node_steps(layout: Layout, nodes, n_node):
    """int32 [N]: the step, counted from this state, at which each node gets assigned (node i
    belongs to group i // chunk; the first unassigned group is step 0); -1 for nodes already
    assigned and for padding rows (index >= ``n_node``). Works on NumPy and JAX arrays."""
    xp = jnp if isinstance(nodes, jax.Array) else np
    idx = xp.arange(nodes.shape[0])
    open_ = (nodes[:, layout.unplaced_col] > 0.5) & (idx < n_node)
    group = idx // layout.chunk
    first = xp.min(xp.where(open_, group, nodes.shape[0]))
    return xp.where(open_, group - first, -1).astype(xp.int32)


def assign(layout: Layout, nodes, steps, actions):
    """Node features [N, F] with the assignment of ``actions`` [S] written in: node i with
    ``steps[i]`` >= 0 (see `node_steps`) and a taken action ``actions[steps[i]]`` >= 0 gets
    `Layout.action_cols` of that action in place of its `Layout.clear_cols`; other rows are
    unchanged. NumPy or JAX (jit / vmap-able)."""
    if layout.kind == MACRO:
        raise ValueError("outcome model: MacroPlacement-v0 assignments are not feature rows (score finished "
                         "placements, see `macro_layout`)")
    xp = jnp if isinstance(nodes, jax.Array) or isinstance(actions, jax.Array) else np
    s = xp.asarray(actions).shape[0]
    a = xp.where((steps >= 0) & (steps < s), xp.asarray(actions)[xp.clip(steps, 0, s - 1)], -1)
    hit = (a >= 0)[:, None]
    new = nodes * (1.0 - xp.asarray(layout.clear_cols, nodes.dtype)) + xp.asarray(layout.action_cols)[xp.maximum(a, 0)]
    return xp.where(hit, new, nodes)


# ----------------------------------------------------------------------------- placed graphs


class PlacedGraph(NamedTuple):
    """One placement observation padded to fixed capacities (leading batch dims allowed):
    nodes float32 [Nc, F], edges float32 [Ec, Fe], senders / receivers int32 [Ec] (padding
    edges join the last node, a padding node: Nc > n_node), n_node / n_edge int32 []."""

    nodes: Any
    edges: Any
    senders: Any
    receivers: Any
    n_node: Any
    n_edge: Any


def pad_observation(obs: dict, node_cap: int, edge_cap: int) -> PlacedGraph:
    """A `worldmodels.replay.standard_obs` dict -> `PlacedGraph` (NumPy) with the capacities."""
    nf, ef = np.asarray(obs["node_features"], np.float32), np.asarray(obs["edge_features"], np.float32)
    n, e = len(nf), len(ef)
    if n >= node_cap or e > edge_cap:
        raise ValueError(f"placed graph of {n} nodes / {e} edges does not fit capacity {node_cap} / {edge_cap} "
                         "(need nodes < node capacity)")
    nodes = np.zeros((node_cap, nf.shape[1]), np.float32)
    nodes[:n] = nf
    edges = np.zeros((edge_cap, ef.shape[1]), np.float32)
    edges[:e] = ef
    snd = np.full(edge_cap, node_cap - 1, np.int32)
    rcv = np.full(edge_cap, node_cap - 1, np.int32)
    snd[:e], rcv[:e] = obs["senders"], obs["receivers"]
    return PlacedGraph(nodes, edges, snd, rcv, np.int32(n), np.int32(e))


def placed_graphs_tuple(pg: PlacedGraph) -> jraph.GraphsTuple:
    """A batch of placed graphs (leading dims flattened to B) -> one GraphsTuple of 2B graphs:
    graph 2b is placement b, graph 2b+1 its padding."""
    nc, f = pg.nodes.shape[-2:]
    ec = pg.senders.shape[-1]
    nodes = pg.nodes.reshape(-1, nc, f)
    b = nodes.shape[0]
    off = (jnp.arange(b, dtype=jnp.int32) * nc)[:, None]
    n_node, n_edge = pg.n_node.reshape(b), pg.n_edge.reshape(b)
    return jraph.GraphsTuple(
        nodes=nodes.reshape(b * nc, f), edges=pg.edges.reshape(b * ec, -1),
        senders=(pg.senders.reshape(b, ec) + off).reshape(-1), receivers=(pg.receivers.reshape(b, ec) + off).reshape(-1),
        n_node=jnp.stack([n_node, nc - n_node], 1).reshape(-1), n_edge=jnp.stack([n_edge, ec - n_edge], 1).reshape(-1),
        globals=jnp.zeros((2 * b, 1), jnp.float32))


def assignment_features(layout: Layout, graphs: jraph.GraphsTuple) -> jnp.ndarray:
    """[n_graph, G] explicit per-graph features of the assignment (see the module docstring):
    device G = 2D + 5, memory G = 3M + 4. Shares are fractions of the graph's totals."""
    g = graphs.n_node.shape[0]
    x, c = graphs.nodes, layout.cols
    nidx, eidx = node_graph_index(graphs), edge_graph_index(graphs)
    s, r = graphs.senders, graphs.receivers
    ssum = lambda v, idx=nidx: jax.ops.segment_sum(v, idx, g)  # noqa: E731
    share = lambda num, den: num / jnp.maximum(den, 1e-9)  # noqa: E731
    placed = 1.0 - x[:, layout.unplaced_col]
    placed_share = segment_mean(placed[:, None], nidx, g)
    L = layout.num_levels
    if layout.kind == DEVICE:
        A = x[:, c["assign"]:c["assign"] + L]                             # [N, D] one-hot (0 if unplaced)
        cost = jnp.expm1(x[:, c["cost"]])                                 # us
        load = share(ssum(cost[:, None] * A), ssum(cost)[:, None])        # [g, D]
        eb = jnp.expm1(graphs.edges[:, 0])                                # MB
        both = placed[s] * placed[r]
        cut = both * (1.0 - (A[s] * A[r]).sum(-1))                        # [E]
        tot_b = ssum(eb, eidx)
        cut_share = share(ssum(eb * cut, eidx), tot_b)[:, None]
        cut_edges = segment_mean(cut[:, None], eidx, g)
        dev_cut = ssum((eb * cut)[:, None] * (A[s] + A[r]), eidx)         # [g, D] bytes sent + received
        dev_cut = share(dev_cut, tot_b[:, None])
        tot_c = ssum(cost)
        xfer = cut * (c["latency_us"] + eb * c["us_per_mb"])             # us, on cut edges
        cp0 = _longest_path(cost, s, r, jnp.zeros_like(xfer), nidx, g)    # the graph's own critical path
        cp = _longest_path(cost, s, r, xfer, nidx, g)                     # + transfers on cut edges
        # + in-order device streams: an op also waits for the previous op (node order) on its device
        pos = jnp.arange(x.shape[0])
        start = jnp.concatenate([jnp.zeros(1, jnp.int32), jnp.cumsum(graphs.n_node)[:-1]])[nidx]
        last = jax.lax.cummax(jnp.where(A > 0.5, pos[:, None], -1), axis=0)          # [N, D] last index on d so far
        prev = jnp.concatenate([jnp.full((1, L), -1), last[:-1]], 0)[pos, jnp.argmax(A, -1)]
        prev = jnp.where((prev >= start) & (placed > 0.5), prev, pos)                # none: a self-loop (ignored)
        ss, rr = jnp.concatenate([s, prev]), jnp.concatenate([r, pos])
        stream = _longest_path(cost, ss, rr, jnp.concatenate([xfer, jnp.zeros_like(cost)]), nidx, g)
        # log(serial time / estimate): each estimate as a speedup over one device
        rel = lambda v: jnp.log(jnp.maximum(share(tot_c, v), 1e-3))[:, None]  # noqa: E731
        return jnp.concatenate([-jnp.sort(-load, -1), -jnp.sort(-dev_cut, -1), cut_share, cut_edges, placed_share,
                                rel(cp), rel(stream), rel(load.max(-1) * tot_c), rel(cp0),
                                jnp.log1p(tot_c)[:, None] / 10.0, jnp.log1p(tot_b)[:, None] / 10.0], -1)
    wl = x[:, c["w_level"]:c["w_level"] + L]
    al = x[:, c["a_level"]:c["a_level"] + L]
    wb, ab = jnp.expm1(x[:, c["w_bytes"]]), jnp.expm1(x[:, c["a_bytes"]])
    w_share = share(ssum(wb[:, None] * wl), ssum(wb)[:, None])
    a_share = share(ssum(ab[:, None] * al), ssum(ab)[:, None])
    reads = ssum((ab[s])[:, None] * al[s], eidx)
    r_share = share(reads, reads.sum(-1, keepdims=True))
    fl = jnp.expm1(x[:, c["flops"]])
    return jnp.concatenate([w_share, a_share, r_share, placed_share, jnp.log1p(ssum(fl))[:, None] / 10.0,
                            jnp.log1p(ssum(wb))[:, None] / 10.0, jnp.log1p(ssum(ab))[:, None] / 10.0], -1)


def _longest_path(cost, senders, receivers, edge_w, nidx, g):
    """[g] per graph, the longest path of a DAG with node weights ``cost`` [N] and edge
    weights ``edge_w`` [E] (finish time of the last node when nothing waits for a device):
    f_i = cost_i + max over in-edges (f_s + w_e), iterated to the fixed point (at most the
    DAG's depth + 1 rounds of a segment max over the edges). Self-loops (the padding edges
    of `PlacedGraph`) are ignored."""
    n = cost.shape[0]
    loop = senders == receivers

    def body(state):
        f, _ = state
        arrive = jax.ops.segment_max(jnp.where(loop, -jnp.inf, f[senders] + edge_w), receivers, n)
        new = cost + jnp.maximum(arrive, 0.0)
        return new, jnp.any(new != f)

    f, _ = jax.lax.while_loop(lambda st: st[1], body, (cost, jnp.bool_(True)))
    return jax.ops.segment_max(f, nidx, g)


def _top_mean(maps, fraction: float):
    """[B] mean of the floor(fraction x cells) largest cells of maps [B, ...] (at least one)."""
    v = maps.reshape(maps.shape[0], -1)
    k = max(int(np.floor(v.shape[1] * fraction)), 1)
    return jax.lax.top_k(v, k)[0].mean(-1)


def macro_features(layout: Layout, pg: PlacedGraph):
    """[B, 14] explicit features of macro placements (leading dims of ``pg`` -> B), the
    proxy cost's three terms estimated from the node and edge features on a ``grid`` x
    ``grid`` grid over the unit canvas (positions and sizes are canvas fractions):

    * wirelength: weighted Manhattan length of the object-pair edges (weight = expm1 of
      the edge feature, the nets' total weight) over the total weight, and the same over
      the edges between hard macros and ports only;
    * density: every macro's (hard and soft) overlap with each cell over the cell's area;
      the mean of the top 10% and 5% cells, the maximum and the mean; the top 10% of the
      hard macros' map alone;
    * routing: each edge as an L route (horizontal on the sender's row across the columns
      it spans, vertical on the receiver's column across the rows it spans), weighted,
      per cell over the total weight / grid: the top 5% of the horizontal, the vertical
      and both maps; macro blockage: the hard macros' height share of each row in the
      columns they touch (and width share of each column in the rows they touch), top
      5% of both maps, and of routing + blockage (the congestion map's two parts at an
      assumed equal scale);
    * log sizes: log1p(nodes) / 10 and log1p(total edge weight) / 10.

    The real netlist's grid and routing capacities are not in the observation, so these are
    estimates; the model learns how they combine."""
    c = layout.cols
    G = int(c["grid"])
    nc, f = pg.nodes.shape[-2:]
    ec = pg.senders.shape[-1]
    x = pg.nodes.reshape(-1, nc, f)
    b = x.shape[0]
    snd, rcv = pg.senders.reshape(b, ec), pg.receivers.reshape(b, ec)
    real_n = (jnp.arange(nc)[None] < pg.n_node.reshape(b, 1)).astype(x.dtype)
    real_e = (jnp.arange(ec)[None] < pg.n_edge.reshape(b, 1)).astype(x.dtype)
    px, py, w, h = x[..., c["x"]], x[..., c["y"]], x[..., c["width"]], x[..., c["height"]]
    hard = x[..., c["is_hard"]] * real_n
    macro = (x[..., c["is_hard"]] + x[..., c["is_soft"]]) * real_n
    fixed = (x[..., c["is_hard"]] + x[..., c["is_port"]]) * real_n
    lo = jnp.arange(G, dtype=x.dtype) / G

    def cover(centre, size):   # [B, N, G] overlap with each grid band, as a fraction of the band
        a, z = (centre - size / 2)[..., None], (centre + size / 2)[..., None]
        return jnp.clip(jnp.minimum(z, lo + 1.0 / G) - jnp.maximum(a, lo), 0.0, None) * G

    ox, oy = cover(px, w), cover(py, h)
    dens = jnp.einsum("bnr,bnc->brc", oy * macro[..., None], ox)
    hard_d = jnp.einsum("bnr,bnc->brc", oy * hard[..., None], ox)
    block_h = jnp.einsum("bnr,bnc->brc", oy * hard[..., None], (ox > 0).astype(x.dtype))
    block_v = jnp.einsum("bnr,bnc->brc", (oy > 0).astype(x.dtype) * hard[..., None], ox)
    take = lambda v, i: jnp.take_along_axis(v, i, 1)  # noqa: E731
    xs, ys, xr, yr = take(px, snd), take(py, snd), take(px, rcv), take(py, rcv)
    ew = jnp.expm1(pg.edges.reshape(b, ec, -1)[..., 0]) * real_e
    tot = jnp.maximum(ew.sum(-1), 1e-9)
    man = jnp.abs(xs - xr) + jnp.abs(ys - yr)
    fw = ew * take(fixed, snd) * take(fixed, rcv)
    wl = (ew * man).sum(-1) / tot
    wl_fixed = (fw * man).sum(-1) / jnp.maximum(fw.sum(-1), 1e-9)
    band = lambda v: jnp.clip(jnp.floor(v * G), 0, G - 1).astype(jnp.int32)  # noqa: E731
    idx = jnp.arange(G)
    span = lambda a, z: ((idx >= band(jnp.minimum(a, z))[..., None])  # noqa: E731
                         & (idx <= band(jnp.maximum(a, z))[..., None])).astype(x.dtype)
    one = lambda v: jax.nn.one_hot(band(v), G, dtype=x.dtype)  # noqa: E731
    scale = (G / tot)[:, None, None]
    route_h = jnp.einsum("ber,bec->brc", one(ys) * ew[..., None], span(xs, xr)) * scale
    route_v = jnp.einsum("ber,bec->brc", span(ys, yr) * ew[..., None], one(xr)) * scale
    both = lambda u, v: jnp.concatenate([u.reshape(b, -1), v.reshape(b, -1)], -1)  # noqa: E731
    return jnp.stack([
        wl, wl_fixed, _top_mean(dens, 0.1), _top_mean(dens, 0.05), dens.reshape(b, -1).max(-1),
        dens.reshape(b, -1).mean(-1), _top_mean(hard_d, 0.1), _top_mean(route_h, 0.05), _top_mean(route_v, 0.05),
        _top_mean(both(route_h, route_v), 0.05), _top_mean(both(block_h, block_v), 0.05),
        _top_mean(both(route_h + block_h, route_v + block_v), 0.05),
        jnp.log1p(real_n.sum(-1)) / 10.0, jnp.log1p(tot) / 10.0], -1)


# ----------------------------------------------------------------------------- network


class OutcomeNet(nn.Module):
    """One member: GraphsTuple (+ its assignment features [n_graph, G] or None) -> [n_graph]."""

    width: int = 64
    depth: int = 3

    @nn.compact
    def __call__(self, graphs: jraph.GraphsTuple, feats):
        g = graphs.n_node.shape[0]
        idx = node_graph_index(graphs)
        x = nn.Dense(self.width)(graphs.nodes)
        e = nn.Dense(self.width)(graphs.edges)
        u = MLP((self.width, self.width))(feats) if feats is not None else jnp.zeros((g, self.width))
        for _ in range(self.depth):
            x, e, u = GNBlock(self.width)(x, e, u, graphs)
        h = MLP((self.width, self.width))(x)
        pooled = jnp.concatenate([jax.ops.segment_sum(h, idx, g) / 100.0, segment_mean(h, idx, g),
                                  segment_max0(h, idx, g), u] + ([feats] if feats is not None else []), -1)
        return MLP((self.width, self.width, 1))(pooled)[:, 0]


@dataclasses.dataclass(frozen=True)
class OutcomeConfig:
    """The outcome model's ``--outcome.*`` section."""

    width: int = 32                 # hidden width (node MLP, GN blocks, readout)
    depth: int = 0                  # GN message-passing blocks over the placed graph (0: node MLP + features only)
    members: int = 3                # ensemble members
    features: bool = True           # explicit assignment globals (`assignment_features`)
    rank_coef: float = 0.0          # weight of the pairwise RankNet loss (0 = regression only; see the docstring)
    lr: float = 2e-3
    steps: int = 1500               # optimisation steps
    batch_size: int = 32            # placements per step


@dataclasses.dataclass(frozen=True)
class OutcomeModel:
    """The outcome model of one environment `Layout` (see the module docstring).

    Params: ``{"net": ensemble params (leading dim = members), "norm": {"mean", "std"}}``
    (target statistics, never moved by the optimizer)."""

    cfg: OutcomeConfig
    layout: Layout
    log_target: bool = True

    @property
    def net(self) -> OutcomeNet:
        return OutcomeNet(self.cfg.width, self.cfg.depth)

    def features(self, pg: PlacedGraph):
        """[B, G] `assignment_features` of the placed graphs (leading dims -> B), or None
        when ``cfg.features`` is off. A function of the data alone: training computes it once."""
        if not self.cfg.features:
            return None
        if self.layout.kind == MACRO:
            return macro_features(self.layout, pg)
        return assignment_features(self.layout, placed_graphs_tuple(pg))[::2]

    def raw(self, params, pg: PlacedGraph, feats=None) -> jnp.ndarray:
        """[K, B] standardised member predictions of the placed graphs (leading dims -> B);
        ``feats``: their `features` if already computed."""
        graphs = placed_graphs_tuple(pg)
        if self.cfg.features:
            f = self.features(pg) if feats is None else feats.reshape(-1, feats.shape[-1])
            f = jnp.stack([f, jnp.zeros_like(f)], 1).reshape(-1, f.shape[-1])    # padding graphs: zeros
        else:
            f = None
        return jax.vmap(lambda p: self.net.apply(p, graphs, f))(params["net"])[:, ::2]

    def target(self, reward):
        """Rewards (environment units) -> the regression target (before standardising)."""
        return jnp.log(jnp.maximum(reward, 1e-9)) if self.log_target else reward

    def _reward(self, params, z):
        """Standardised target units -> final reward (environment units)."""
        n = jax.lax.stop_gradient(params["norm"])
        t = n["mean"] + n["std"] * z
        return jnp.exp(t) if self.log_target else t

    def score_with_std(self, params, pg: PlacedGraph, feats=None):
        """(predicted final reward [...], ensemble std in standardised target units [...]) for
        placed graphs with any leading dims (``feats``: their `features`, if computed)."""
        lead = pg.n_node.shape
        z = self.raw(params, pg, feats)
        return self._reward(params, z.mean(0)).reshape(lead), z.std(0).reshape(lead)

    def score(self, params, pg: PlacedGraph, feats=None) -> jnp.ndarray:
        """Predicted final reward (environment units) of each placed graph: shape = leading dims."""
        return self.score_with_std(params, pg, feats)[0]

    def score_optimistic(self, params, pg: PlacedGraph, optimism: float, feats=None) -> jnp.ndarray:
        """Upper confidence score (environment units): the ensemble mean plus ``optimism``
        ensemble standard deviations, in the standardised target space; 0 gives :meth:`score`."""
        z = self.raw(params, pg, feats)
        return self._reward(params, z.mean(0) + optimism * z.std(0)).reshape(pg.n_node.shape)

    def init(self, key, example: PlacedGraph, rewards: np.ndarray, feats=None) -> dict:
        """Parameters for ``members`` members (one key each), built on ``example`` (a batch
        [B], with its `features` if already computed); target mean / std from the training
        ``rewards`` (valid ones)."""
        @jax.jit  # eagerly, Flax's init dispatches op by op (slow)
        def init_net(keys, pg, feats):
            graphs = placed_graphs_tuple(pg)
            if self.cfg.features:
                f = self.features(pg) if feats is None else feats
                feats = jnp.stack([f, jnp.zeros_like(f)], 1).reshape(-1, f.shape[-1])
            return jax.vmap(lambda k: self.net.init(k, graphs, feats))(keys)

        net = init_net(jax.random.split(key, self.cfg.members), example, feats)
        y = np.asarray(self.target(jnp.asarray(rewards, jnp.float32)), np.float64)
        return {"net": net, "norm": {"mean": jnp.float32(y.mean()), "std": jnp.float32(max(y.std(), 1e-6))}}

    def loss(self, params, pg: PlacedGraph, reward, group, feats=None):
        """(loss, metrics): per member, mean squared error of the standardised target plus
        ``rank_coef`` x the RankNet loss over same-group pairs (reward [B], group int [B])."""
        z = self.raw(params, pg, feats)                                   # [K, B]
        n = jax.lax.stop_gradient(params["norm"])
        y = (self.target(reward) - n["mean"]) / n["std"]
        mse = ((z - y) ** 2).mean()
        better = (group[:, None] == group[None, :]) & (y[:, None] > y[None, :] + 1e-6)   # i beats j
        pairs = jnp.maximum(better.sum(), 1)
        rank = (jax.nn.softplus(-(z[:, :, None] - z[:, None, :])) * better).sum() / (pairs * z.shape[0])
        return mse + self.cfg.rank_coef * rank, {"mse": mse, "rank": rank}


# ----------------------------------------------------------------------------- data -> placed graphs


class PlacementSet(NamedTuple):
    """Finished placements ready to score: ``placed`` (`PlacedGraph`, leading dim [B]),
    reward float32 [B], group int32 [B] (graph index)."""

    placed: PlacedGraph
    reward: np.ndarray
    group: np.ndarray


def capacities(data_sets) -> tuple[int, int]:
    """(node, edge) capacity holding every graph of the given `OutcomeData` stores."""
    n = max(len(o["node_features"]) for d in data_sets for o in d.start_obs)
    e = max(len(o["edge_features"]) for d in data_sets for o in d.start_obs)
    return n + 1, max(e, 1)


def placement_set(data, node_cap: int, edge_cap: int, valid_only: bool = True) -> PlacementSet:
    """`worldmodels.outcome_data.OutcomeData` -> its final placed graphs (the graph's reset
    observation with each episode's actions assigned)."""
    templates = [pad_observation(o, node_cap, edge_cap) for o in data.start_obs]
    steps = [node_steps(data.layout, t.nodes, t.n_node) for t in templates]
    keep = np.flatnonzero(data.valid) if valid_only else np.arange(len(data))
    rows = []
    for i in keep:
        g = int(data.graph[i])
        t = templates[g]
        rows.append(t._replace(nodes=assign(data.layout, t.nodes, steps[g], data.actions[i])))
    placed = PlacedGraph(*(np.stack(x) for x in zip(*rows)))
    return PlacementSet(placed, data.reward[keep].astype(np.float32), data.graph[keep].astype(np.int32))


def macro_placement_set(data, node_cap: int, edge_cap: int) -> PlacementSet:
    """`worldmodels.outcome_data.MacroOutcomeData` -> its placed graphs (each netlist's
    finished observation with the placement's node features)."""
    if not len(data):
        raise ValueError("outcome model: no macro placements in this set")
    templates = [pad_observation(o, node_cap, edge_cap) for o in data.start_obs]
    rows = []
    for g, x in zip(data.graph, data.nodes):
        t = templates[int(g)]
        nodes = t.nodes.copy()
        nodes[:len(x)] = x
        rows.append(t._replace(nodes=nodes))
    placed = PlacedGraph(*(np.stack(x) for x in zip(*rows)))
    return PlacementSet(placed, data.reward.astype(np.float32), data.graph.astype(np.int32))


# ----------------------------------------------------------------------------- training


def fit(model: OutcomeModel, train: PlacementSet, seed: int = 0, progress: bool = False,
        callback=None) -> tuple[dict, list[dict]]:
    """Train ``model`` on ``train`` for ``cfg.steps`` Adam steps of ``cfg.batch_size`` random
    placements. Returns (params, per-step metrics as floats). Seeded."""
    from worldmodels.logging import progress as bar

    cfg = model.cfg
    if len(train.reward) < 2:
        raise ValueError(f"outcome model: need at least 2 training placements, got {len(train.reward)}")
    rng = np.random.default_rng(seed)
    b = min(cfg.batch_size, len(train.reward))
    feats = features_of(model, train.placed)
    params = model.init(jax.random.key(seed), jax.tree.map(lambda x: x[:b], train.placed), train.reward,
                        None if feats is None else feats[:b])
    opt = optax.chain(optax.clip_by_global_norm(1.0),
                      optax.adam(optax.cosine_decay_schedule(cfg.lr, max(cfg.steps, 1), alpha=0.05)))
    net_opt = opt.init(params["net"])


    @jax.jit
    def step(net, opt_state, norm, pg, reward, group, feats):
        def f(net):
            return model.loss({"net": net, "norm": norm}, pg, reward, group, feats)
        (loss, m), grads = jax.value_and_grad(f, has_aux=True)(net)
        updates, opt_state = opt.update(grads, opt_state, net)
        return optax.apply_updates(net, updates), opt_state, dict(m, loss=loss)

    history = []
    net = params["net"]
    with bar(total=cfg.steps, desc="outcome", enabled=progress) as pbar:
        for i in range(cfg.steps):
            idx = rng.choice(len(train.reward), b, replace=False)
            pg = jax.tree.map(lambda x: x[idx], train.placed)
            net, net_opt, m = step(net, net_opt, params["norm"], pg, train.reward[idx], train.group[idx],
                                   None if feats is None else feats[idx])
            if callback is not None or i + 1 == cfg.steps:
                m = {k: float(v) for k, v in m.items()}
                history.append(m)
                if callback is not None:
                    callback(i, m)
            pbar.update(1)
    return {"net": net, "norm": params["norm"]}, history


def _chunked(fn, placed, chunk: int) -> np.ndarray:
    """``fn`` over a pytree of arrays with leading dim B (placed graphs and their features)
    ``chunk`` at a time (the last one padded)."""
    b = jax.tree.leaves(placed)[0].shape[0]
    out = []
    for lo in range(0, b, chunk):
        part = jax.tree.map(lambda x: x[lo:lo + chunk], placed)
        k = jax.tree.leaves(part)[0].shape[0]
        if k < chunk:
            part = jax.tree.map(lambda x: np.concatenate([x, np.repeat(x[:1], chunk - k, 0)]), part)
        out.append(np.asarray(fn(part))[:k])
    return np.concatenate(out)


def features_of(model: OutcomeModel, placed: PlacedGraph, chunk: int = 64):
    """`OutcomeModel.features` [B, G] of placed graphs (NumPy), or None when off."""
    if not model.cfg.features:
        return None
    return _chunked(_jitted(model, "features"), placed, chunk)


def predict(model: OutcomeModel, params, placed: PlacedGraph, chunk: int = 64) -> np.ndarray:
    """Scores [B] (environment units) of placed graphs (leading dim B)."""
    fn = _jitted(model, "score")
    feats = features_of(model, placed, chunk)
    return _chunked(lambda part: fn(params, *part), (placed, feats), chunk)


_JIT_CACHE: dict = {}


def _jitted(model: OutcomeModel, name: str):
    key = (id(model), name)
    if key not in _JIT_CACHE:
        _JIT_CACHE[key] = (model, jax.jit(getattr(model, name)))
    return _JIT_CACHE[key][1]


# ----------------------------------------------------------------------------- files


def save_outcome(directory, model: OutcomeModel, params, node_cap: int, edge_cap: int) -> str:
    """Write ``outcome.json`` (config, layout, target kind, capacities) and
    ``outcome.msgpack`` (params) under ``directory``; returns the directory."""
    import os

    from flax import serialization

    from worldmodels.logging import write_json_atomic

    os.makedirs(directory, exist_ok=True)
    write_json_atomic(os.path.join(directory, "outcome.json"),
                      {"config": dataclasses.asdict(model.cfg), "layout": model.layout.to_json(),
                       "log_target": model.log_target, "node_cap": node_cap, "edge_cap": edge_cap})
    tmp = os.path.join(directory, "outcome.msgpack.tmp")
    with open(tmp, "wb") as f:
        f.write(serialization.to_bytes(jax.device_get(params)))
    os.replace(tmp, os.path.join(directory, "outcome.msgpack"))
    return os.fspath(directory)


def load_outcome(directory) -> tuple[OutcomeModel, dict, int, int]:
    """(model, params, node capacity, edge capacity) saved by `save_outcome`; ValueError /
    FileNotFoundError naming the file on a missing or corrupt one."""
    import json
    import os

    from flax import serialization

    meta_path, params_path = os.path.join(directory, "outcome.json"), os.path.join(directory, "outcome.msgpack")
    for p in (meta_path, params_path):
        if not os.path.isfile(p):
            raise FileNotFoundError(f"outcome model {directory}: {os.path.basename(p)} not found")
    try:
        with open(meta_path) as f:
            meta = json.load(f)
        model = OutcomeModel(OutcomeConfig(**meta["config"]), Layout.from_json(meta["layout"]), bool(meta["log_target"]))
        with open(params_path, "rb") as f:
            raw = serialization.msgpack_restore(f.read())
        net = jax.tree.map(jnp.asarray, raw["net"])
        params = {"net": net, "norm": {k: jnp.float32(v) for k, v in raw["norm"].items()}}
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as e:
        raise ValueError(f"outcome model {directory}: unreadable ({type(e).__name__}: {e})") from None
    return model, params, int(meta["node_cap"]), int(meta["edge_cap"])
