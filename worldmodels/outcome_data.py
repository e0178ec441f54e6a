"""Finished real placements for the outcome model: diverse episodes of the placement envs.

(``MacroPlacement-v0`` has its own store and collector, `MacroOutcomeData` and
`collect_macro_outcomes`, at the end of this module: its placements are positions, not
action sequences, and include annealed and perturbed ones.)

`collect_outcomes(env_id, graphs, episodes_per_graph, seed, env_kwargs)` runs complete
episodes of ``DevicePlacement-v0`` or ``MemoryPlacement-v0`` on the real environment and
keeps, per episode, the actions taken and the final (only non-zero) reward. The final
observation is not stored: it is the graph's reset observation with the actions written
into its assignment columns (`worldmodels.outcome.assign`, checked against the real env by
the tests), so a store holds one observation per graph plus an int array per episode.

Behaviour policies (one drawn per episode, with its own parameter) cover the range of
placements a controller will meet, from uniform random to near the non-learned baselines:

* ``random``: uniform over the legal actions.
* ``sticky``: repeat the previous action with probability q ~ U[0.5, 0.98] (contiguous
  splits, like a human expert's), else uniform.
* ``softmax``: a heuristic's preference with a temperature tau ~ logU[0.03, 10] (low tau:
  near the heuristic; high: random). Device: prefer the least-loaded device (load = summed
  cost of the ops placed there, relative to one group's cost). Memory: prefer fast levels,
  with a per-episode bias between weights and activations.
* ``baseline``: a non-learned baseline's actions, each replaced by a uniform legal action with
  probability eps ~ U[0, 0.5]. Device: expert, METIS, m-ETF, annealing (300 iterations) and
  single device (`systems_envs.placement.baselines`; a group takes the device most of its
  ops get), devices relabelled by a random permutation (gpu presets are homogeneous).
  Memory: the compiler-like greedy mapping (`systems_envs.placement.memory.greedy_mapping`).

An action that the real mask forbids is replaced by a uniform legal one, so memory episodes
do not end early; an episode that still ends invalid keeps ``valid=False``. Duplicate
placements of a graph are dropped (`OutcomeData.dedupe`), so held-out sets never repeat a
training placement.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import gymnasium as gym
import numpy as np

import systems_envs  # noqa: F401  (registers the environments)
from worldmodels.replay import standard_obs

PLACEMENT_ENVS = ("DevicePlacement-v0", "MemoryPlacement-v0")
POLICY_NAMES = ("random", "sticky", "softmax", "baseline")


@dataclasses.dataclass
class OutcomeData:
    """Finished placements of a few graphs (E episodes, S = the longest episode's steps).

    graphs: graph names; start_obs: per graph its reset observation (`standard_obs` dict);
    graph: int64 [E] index into ``graphs``; actions: int32 [E, S] (-1 past the episode's
    end); reward: float64 [E] final reward (environment units); valid: bool [E] (not out of
    memory / over capacity); policy: int8 [E] index into `POLICY_NAMES`; layout: the
    environment's assignment layout (`worldmodels.outcome.Layout`)."""

    env_id: str
    graphs: list[str]
    start_obs: list[dict]
    graph: np.ndarray
    actions: np.ndarray
    reward: np.ndarray
    valid: np.ndarray
    policy: np.ndarray
    layout: object

    def __len__(self) -> int:
        return len(self.reward)

    def subset(self, idx) -> "OutcomeData":
        idx = np.asarray(idx, np.int64)
        return dataclasses.replace(self, graph=self.graph[idx], actions=self.actions[idx], reward=self.reward[idx],
                                   valid=self.valid[idx], policy=self.policy[idx])

    def dedupe(self) -> "OutcomeData":
        """The same store without repeated (graph, actions) episodes (first kept, order kept)."""
        keys = np.concatenate([self.graph[:, None].astype(np.int64), self.actions.astype(np.int64)], axis=1)
        _, first = np.unique(keys, axis=0, return_index=True)
        return self.subset(np.sort(first))

    def split(self, held_out: float, seed: int = 0) -> tuple["OutcomeData", "OutcomeData"]:
        """(train, held-out): per graph a random ``held_out`` fraction of its episodes."""
        if not 0.0 < held_out < 1.0:
            raise ValueError(f"held-out fraction must be in (0, 1), got {held_out}")
        rng = np.random.default_rng(seed)
        test = np.zeros(len(self), bool)
        for g in range(len(self.graphs)):
            idx = np.flatnonzero(self.graph == g)
            k = int(round(held_out * len(idx)))
            test[rng.permutation(idx)[:k]] = True
        return self.subset(np.flatnonzero(~test)), self.subset(np.flatnonzero(test))


def _device_baselines(env, rng: np.random.Generator) -> list[np.ndarray]:
    """Per-step actions [num_groups] of the device baselines (majority device per group)."""
    from systems_envs.placement.baselines import anneal, etf, expert, metis, single_device

    cg, out = env.cg, []
    for fn in (expert, metis, etf, single_device):
        out.append(fn(cg, 0))
    out.append(anneal(cg, 0, iters=300, start=out[2]))
    D = cg.num_devices
    return [np.array([np.bincount(p[m], minlength=D).argmax() for m in env.members], np.int64) for p in out]


def _memory_baselines(env) -> list[np.ndarray]:
    from systems_envs.placement.memory import greedy_mapping

    w, a = greedy_mapping(env.lg, env.acc)
    return [np.asarray(w * env.M + a, np.int64)]


class _Episode:
    """One episode's behaviour policy: ``act(step, mask) -> action``."""

    def __init__(self, env, kind: str, baselines: list[np.ndarray], rng: np.random.Generator):
        self.env, self.kind, self.rng = env, kind, rng
        self.policy = int(rng.integers(len(POLICY_NAMES)))
        name = POLICY_NAMES[self.policy]
        self.prev = None
        if name == "sticky":
            self.q = rng.uniform(0.5, 0.98)
        elif name == "softmax":
            self.tau = float(np.exp(rng.uniform(np.log(0.03), np.log(10.0))))
            if kind == "device":
                cost = env.cg.dur_ms.min(axis=1)
                self.group_cost = np.array([cost[m].sum() for m in env.members])
                self.load = np.zeros(env.cg.num_devices)
            else:
                self.bias = rng.uniform(0.0, 1.0)     # 0: weights want fast levels, 1: activations
        elif name == "baseline":
            base = baselines[int(rng.integers(len(baselines)))]
            if kind == "device":
                base = rng.permutation(env.cg.num_devices)[base]
            self.base, self.eps = base, rng.uniform(0.0, 0.5)

    def act(self, step: int, mask: np.ndarray) -> int:
        legal = np.flatnonzero(mask)
        rng, name = self.rng, POLICY_NAMES[self.policy]
        a = None
        if name == "sticky" and self.prev is not None and rng.random() < self.q:
            a = self.prev
        elif name == "softmax":
            if self.kind == "device":
                pref = -self.load / max(float(self.group_cost.mean()), 1e-12)
            else:
                m = self.env.M
                w, lv = np.divmod(np.arange(m * m), m)
                pref = -((1.0 - self.bias) * w + self.bias * lv)
            logits = np.where(mask.astype(bool), pref / self.tau, -np.inf)
            p = np.exp(logits - logits.max())
            a = int(rng.choice(len(p), p=p / p.sum()))
        elif name == "baseline" and rng.random() >= self.eps:
            a = int(self.base[step])
        if a is None or not mask[a]:
            a = int(rng.choice(legal))
        if name == "softmax" and self.kind == "device":
            self.load[a] += self.group_cost[step]
        self.prev = a
        return a


def collect_outcomes(env_id: str, graphs: Sequence[str], episodes_per_graph: int, seed: int = 0,
                     env_kwargs: Mapping | None = None, progress: bool = False) -> OutcomeData:
    """Run ``episodes_per_graph`` complete episodes per graph of ``env_id`` (see the module
    docstring) and return them deduplicated. Seeded: same arguments, same store."""
    from worldmodels.logging import progress as bar
    from worldmodels.outcome import layout_of

    if env_id not in PLACEMENT_ENVS:
        raise ValueError(f"outcome data: environment must be one of {PLACEMENT_ENVS}, got {env_id!r}")
    if episodes_per_graph < 1:
        raise ValueError(f"outcome data: episodes per graph must be >= 1, got {episodes_per_graph}")
    if not graphs:
        raise ValueError("outcome data: no graphs given")
    kind = "device" if env_id == "DevicePlacement-v0" else "memory"
    rng = np.random.default_rng(seed)
    starts, rows, layout = [], [], None
    with bar(total=episodes_per_graph * len(graphs), desc=f"collect {env_id}", enabled=progress, unit="ep") as pbar:
        for gi, name in enumerate(graphs):
            env = gym.make(env_id, graph=name, **dict(env_kwargs or {})).unwrapped
            layout = layout or layout_of(env)
            obs, _ = env.reset(seed=seed)
            starts.append(standard_obs(obs))
            baselines = _device_baselines(env, rng) if kind == "device" else _memory_baselines(env)
            for _ in range(episodes_per_graph):
                obs, _ = env.reset()
                ep = _Episode(env, kind, baselines, rng)
                acts, step = [], 0
                while True:
                    a = ep.act(step, obs["action_mask"])
                    obs, r, term, trunc, info = env.step(a)
                    acts.append(a)
                    step += 1
                    if term or trunc:
                        break
                rows.append((gi, acts, float(r), bool(info.get("valid", True)) and bool(term), ep.policy))
                pbar.update(1)
            env.close()
    width = max(len(r[1]) for r in rows)
    actions = np.full((len(rows), width), -1, np.int32)
    for i, r in enumerate(rows):
        actions[i, :len(r[1])] = r[1]
    data = OutcomeData(env_id, list(graphs), starts, np.array([r[0] for r in rows], np.int64), actions,
                       np.array([r[2] for r in rows]), np.array([r[3] for r in rows], bool),
                       np.array([r[4] for r in rows], np.int8), layout)
    return data.dedupe()


# ----------------------------------------------------------------------------- macro placement

MACRO_ENV = "MacroPlacement-v0"
MACRO_POLICY_NAMES = ("random", "sticky", "anneal", "perturbed")


@dataclasses.dataclass
class MacroOutcomeData:
    """Finished ``MacroPlacement-v0`` placements of a few netlists (E placements).

    graphs: netlist names (`macro_netlist`); start_obs: per netlist the observation of a
    finished episode (`standard_obs` dict: its graph, and the node features of that one
    placement); graph: int64 [E] index into ``graphs``; nodes: per placement float32
    [n_nodes of its netlist, 10] node features (the finished observation's: sizes, placed,
    x / W, y / H, orientation); reward: float64 [E] = -proxy cost (the environment's final
    reward); valid: bool [E] (all True: only complete placements are kept); policy: int8 [E]
    index into `MACRO_POLICY_NAMES`; chain: int64 [E] placements derived from one episode
    share it; layout: `worldmodels.outcome.macro_layout`."""

    env_id: str
    graphs: list[str]
    start_obs: list[dict]
    graph: np.ndarray
    nodes: list
    reward: np.ndarray
    valid: np.ndarray
    policy: np.ndarray
    chain: np.ndarray
    layout: object

    def __len__(self) -> int:
        return len(self.reward)

    def subset(self, idx) -> "MacroOutcomeData":
        idx = np.asarray(idx, np.int64)
        return dataclasses.replace(self, graph=self.graph[idx], nodes=[self.nodes[i] for i in idx],
                                   reward=self.reward[idx], valid=self.valid[idx], policy=self.policy[idx],
                                   chain=self.chain[idx])

    def dedupe(self) -> "MacroOutcomeData":
        """The same store without repeated (netlist, node features) placements (first kept)."""
        seen, keep = set(), []
        for i, (g, x) in enumerate(zip(self.graph, self.nodes)):
            key = (int(g), np.ascontiguousarray(x).tobytes())
            if key not in seen:
                seen.add(key)
                keep.append(i)
        return self.subset(keep)

    def split(self, held_out: float, seed: int = 0) -> tuple["MacroOutcomeData", "MacroOutcomeData"]:
        """(train, held-out): per netlist a random ``held_out`` fraction of its *chains* (an
        episode and the placements annealed or perturbed from it), so no held-out placement
        is a small variation of a training one."""
        if not 0.0 < held_out < 1.0:
            raise ValueError(f"held-out fraction must be in (0, 1), got {held_out}")
        rng = np.random.default_rng(seed)
        test = np.zeros(len(self), bool)
        for g in range(len(self.graphs)):
            chains = np.unique(self.chain[self.graph == g])
            k = int(round(held_out * len(chains)))
            k = max(k, 1) if len(chains) > 1 else k     # a netlist with 2+ chains holds one out at least
            test |= np.isin(self.chain, rng.permutation(chains)[:k]) & (self.graph == g)
        return self.subset(np.flatnonzero(~test)), self.subset(np.flatnonzero(test))


def macro_netlist(name: str):
    """(Netlist, PlcHeader, Placement) of a netlist name: a shipped one (``ariane133``) or
    ``gen:SEED``, a `systems_envs.chip.generator` netlist whose sizes are drawn from SEED
    (hard macros 8..40, clusters 4..8 per hard macro, ports 16..64, nets 8..14 per object)."""
    from systems_envs.chip.env import SHIPPED, load_shipped
    from systems_envs.chip.generator import generate_netlist

    if name.startswith("gen:"):
        try:
            seed = int(name[4:])
        except ValueError:
            raise ValueError(f"netlist {name!r}: 'gen:' must be followed by an integer seed") from None
        rng = np.random.default_rng([seed, 13])
        hard = int(rng.integers(8, 41))
        soft = hard * int(rng.integers(4, 9))
        ports = int(rng.integers(16, 65))
        nets = (hard + soft + ports) * int(rng.integers(8, 15))
        nl, header, pl = generate_netlist(num_hard=hard, num_soft=soft, num_ports=ports, num_nets=nets, seed=seed)
        return dataclasses.replace(nl, name=name), header, pl
    if name in SHIPPED:
        return load_shipped(name)
    raise ValueError(f"unknown netlist {name!r} (shipped: {', '.join(SHIPPED)}; or gen:SEED)")


def _perturb(nl, header, pl, k: int, rng: np.random.Generator):
    """``pl`` after ``k`` random changes: a hard macro to a random legal cell centre (one
    third), two hard macros' centres swapped when both stay legal (one third), a soft
    macro by a Gaussian step of one cell (one third). Stays legal."""
    from systems_envs.chip.legality import cell_centres, is_legal, legal_cells

    out = pl.copy()
    cx, cy = cell_centres(header)
    hard, soft = nl.hard, nl.soft
    placed = np.zeros(nl.num_objects, bool)
    placed[hard] = True
    gw, gh = header.width / header.columns, header.height / header.rows
    for _ in range(k):
        u = rng.random()
        if u < 1 / 3 or (u >= 2 / 3 and not len(soft)):
            m = int(rng.choice(hard))
            ok = np.flatnonzero(legal_cells(nl, header, out, m, placed))
            if len(ok):
                c = int(rng.choice(ok))
                out.x[m], out.y[m] = cx[c], cy[c]
        elif u < 2 / 3:
            a, b = rng.choice(hard, 2, replace=len(hard) < 2)
            trial = out.copy()
            trial.x[[a, b]], trial.y[[a, b]] = out.x[[b, a]], out.y[[b, a]]
            if is_legal(nl, header, trial):
                out = trial
        else:
            m = int(rng.choice(soft))
            hw, hh = nl.obj_width[m] / 2, nl.obj_height[m] / 2
            out.x[m] = np.clip(out.x[m] + rng.normal(0, gw), hw, header.width - hw)
            out.y[m] = np.clip(out.y[m] + rng.normal(0, gh), hh, header.height - hh)
    return out


def collect_macro_outcomes(netlists: Sequence[str], placements_per_netlist: int, seed: int = 0,
                           fd_steps: int = 100, anneal_moves: int = 800, max_changes: int = 200,
                           progress: bool = False) -> MacroOutcomeData:
    """About ``placements_per_netlist`` finished placements per netlist (`macro_netlist`
    names), in *chains*: a complete real ``MacroPlacement-v0`` episode (force-directed soft
    macros with ``fd_steps`` steps per stage, reward -proxy cost) whose behaviour policy is
    ``random`` (uniform legal cells) or ``sticky`` (with probability q ~ U[0.5, 0.95] a legal
    cell within two cells of the previous macro's, else uniform: clustered placements), then
    either up to 4 ``anneal`` snapshots (`systems_envs.chip.baselines.anneal` from the
    episode's placement, ``anneal_moves`` / 8 to ``anneal_moves`` proposals each, no
    force-directed re-placement, each continuing the last) or up to 4 ``perturbed`` copies
    (`_perturb` with 1 to ``max_changes`` changes, log-uniform). Episodes that end in a
    dead end are not complete placements and are dropped. Seeded: same arguments, same store."""
    from systems_envs.chip.baselines import anneal
    from systems_envs.chip.cost import PlacementCost
    from systems_envs.chip.env import MacroPlacementEnv
    from worldmodels.logging import progress as bar
    from worldmodels.outcome import macro_layout

    if placements_per_netlist < 1:
        raise ValueError(f"outcome data: placements per netlist must be >= 1, got {placements_per_netlist}")
    if not netlists:
        raise ValueError("outcome data: no netlists given")
    rng = np.random.default_rng(seed)
    starts, rows, n_chain, cells = [], [], 0, 1
    with bar(total=placements_per_netlist * len(netlists), desc=f"collect {MACRO_ENV}", enabled=progress,
             unit="pl") as pbar:
        for gi, name in enumerate(netlists):
            case = macro_netlist(name)
            nl, header = case[0], case[1]
            env = MacroPlacementEnv(netlists=[case], fd_steps=fd_steps)
            cols, cells = header.columns, max(cells, env.max_cells)
            got, start = 0, None
            while got < placements_per_netlist:
                obs, _ = env.reset(seed=int(rng.integers(2**31)))
                policy = int(rng.integers(2))
                q, prev = rng.uniform(0.5, 0.95), None
                while True:
                    legal = np.flatnonzero(obs["action_mask"])
                    a = int(rng.choice(legal))
                    if policy == 1 and prev is not None and rng.random() < q:
                        close = (np.abs(legal // cols - prev // cols) <= 2) & (np.abs(legal % cols - prev % cols) <= 2)
                        near = legal[close]
                        if len(near):
                            a = int(rng.choice(near))
                    prev = a
                    obs, r, term, trunc, info = env.step(a)
                    if term or trunc:
                        break
                if "placement" not in info:
                    continue     # a dead end: not a complete placement
                n_chain += 1
                pl = info["placement"]
                start = start or standard_obs(obs)
                chain = [(obs["node_features"][:nl.num_objects].copy(), float(r), policy)]
                derive = int(rng.integers(2))
                cur = pl
                for _ in range(min(4, placements_per_netlist - got - 1)):
                    if derive == 0:
                        moves = int(rng.integers(max(anneal_moves // 8, 1), anneal_moves + 1))
                        res = anneal(nl, header, cur, max_moves=moves, fd_every=0, seed=int(rng.integers(2**31)),
                                     weights=env.weights)
                        cur, cost = res.placement, res.costs.proxy_cost
                    else:
                        k = int(np.exp(rng.uniform(0.0, np.log(max(max_changes, 1)))))
                        p2 = _perturb(nl, header, pl, k, rng)
                        cost = PlacementCost(nl, header, p2, env.weights).costs().proxy_cost
                        cur = p2
                    o = env.finished_observation(0, cur)
                    chain.append((o["node_features"][:nl.num_objects].copy(), -float(cost), 2 + derive))
                for x, rew, pol in chain:
                    rows.append((gi, x, rew, pol, n_chain))
                got += len(chain)
                pbar.update(len(chain))
            starts.append(start)
            env.close()
    data = MacroOutcomeData(MACRO_ENV, list(netlists), starts, np.array([r[0] for r in rows], np.int64),
                            [r[1] for r in rows], np.array([r[2] for r in rows]), np.ones(len(rows), bool),
                            np.array([r[3] for r in rows], np.int8), np.array([r[4] for r in rows], np.int64),
                            macro_layout(cells))
    return data.dedupe()
