"""Real-trajectory collection and the replay store the world model trains on.

`collect(env_id, graphs, episodes, policy, ...)` runs a behaviour policy in a registered
environment (one environment per graph; episodes spread round-robin over the graphs) and
returns a `Replay`. Policies are callables ``policy(env, obs, rng) -> action``:
`random_policy` (uniform over legal actions), `greedy_policy` (rewriting: the candidate with
the largest immediate cost decrease, by look-ahead; placement: the first legal device),
`epsilon_policy(base, eps)`, or any controller wrapped the same way.

Storage. An episode of L steps has L+1 states s_0..s_L. States are stored *ragged*
(trimmed to their real rows, concatenated, with offsets) because the environments'
fixed-capacity observations are mostly padding (a 2048-node rewrite observation holds
~100-800 real nodes); `state_obs(i)` gives back a standard observation and
`encoders.graphs.batch_observations` pads batches to the capacity buckets. Per state:
node_features [n_i, F], edge_features [e_i, E], senders/receivers [e_i] (local positions),
globals [G], action_mask [A+1] (last = stop; 0 for environments without a stop action),
cost [] (rewrite: cost in ms; placement: nan), candidate_rule [A], candidate_nodes [A, K],
candidate_reward [A] (each candidate's immediate reward; rewriting only; placement has none). Per transition t (state index `state_of[t]`): action,
reward, terminated, truncated. Per episode: first state, length, graph index.

Mask targets ("carried" slots, see `dynamics.heads`): ``carried_mask[i, h-1, j]`` = 1 if
slot j of state i is legal in the state h steps later in the same episode (h = 1..horizon;
0 past the episode end). Rewriting: candidate j of state i, identified by (rule id, matched
node ids) - node ids are stable across rewrites - is among the candidates offered in the
later state. Placement: slot j is device j (identity carried), so it is that state's mask.
The stop slot is legal whenever the environment has a stop action.

`Replay.save(path)` / `Replay.load(path)` use one compressed ``.npz`` (metadata as JSON
inside); `split_by_episode` gives train / validation stores with disjoint episodes.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Mapping, Sequence

import gymnasium as gym
import numpy as np

import systems_envs  # noqa: F401  (registers the environments)

Policy = Callable[[gym.Env, Mapping[str, np.ndarray], np.random.Generator], int]
REWRITE, PLACEMENT = "rewrite", "placement"


# ----------------------------------------------------------------------------- observations


def env_kind(env: gym.Env) -> str:
    """``"rewrite"`` if the env offers candidates (GraphRewrite), else ``"placement"``."""
    return REWRITE if "candidate_rule" in env.observation_space.spaces else PLACEMENT


def standard_obs(obs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Any environment observation -> the encoders' graph dict, trimmed to real rows.

    Rewrite observations already use it; placement ones (``nodes``, optional ``edges``,
    ``senders``, ``receivers``) get zero edge features [E, 1] if absent and globals [1] = 0.
    The stop slot is appended to a placement ``action_mask`` (always 0: no stop action),
    also for a padded graph observation without candidates (``MacroPlacement-v0``)."""
    if "node_features" in obs:
        n, e = int(obs["n_node"][0]), int(obs["n_edge"][0])
        out = {"node_features": np.asarray(obs["node_features"][:n], np.float32),
               "edge_features": np.asarray(obs["edge_features"][:e], np.float32),
               "senders": np.asarray(obs["senders"][:e], np.int32),
               "receivers": np.asarray(obs["receivers"][:e], np.int32),
               "globals": np.asarray(obs["globals"], np.float32),
               "action_mask": np.asarray(obs["action_mask"], np.int8)}
        if "candidate_rule" not in obs:  # placement on a padded graph (MacroPlacement-v0): no stop action
            out["action_mask"] = np.concatenate([out["action_mask"], np.zeros(1, np.int8)])
        if "candidate_rule" in obs:
            out["candidate_rule"] = np.asarray(obs["candidate_rule"], np.int32)
            out["candidate_nodes"] = np.asarray(obs["candidate_nodes"], np.int32)
            out["candidate_reward"] = np.asarray(obs["candidate_reward"], np.float32)
        return out
    if "nodes" not in obs:
        raise ValueError(f"observation has neither 'node_features' nor 'nodes' (keys: {sorted(obs)})")
    nodes = np.asarray(obs["nodes"], np.float32)
    s = np.asarray(obs["senders"], np.int32)
    edges = np.asarray(obs["edges"], np.float32) if "edges" in obs else np.zeros((len(s), 1), np.float32)
    mask = np.concatenate([np.asarray(obs["action_mask"], np.int8), np.zeros(1, np.int8)])
    return {"node_features": nodes, "edge_features": edges.reshape(len(s), -1), "senders": s,
            "receivers": np.asarray(obs["receivers"], np.int32), "globals": np.zeros(1, np.float32),
            "action_mask": mask}


def _candidate_ids(env: gym.Env, num_slots: int) -> list[tuple]:
    """Stable identities (rule id, matched node ids) of the offered candidates, slot order."""
    cands = env.unwrapped.index.candidates[:num_slots]
    return [(c.rule_id, tuple(c.match.nodes)) for c in cands]


# ----------------------------------------------------------------------------- policies


def _legal(obs: Mapping[str, np.ndarray], kind: str) -> np.ndarray:
    m = np.asarray(obs["action_mask"]).astype(bool)
    return np.flatnonzero(m)


def random_policy(stop_prob: float = 0.0) -> Policy:
    """Uniform over legal non-stop actions; stop (rewriting) with ``stop_prob`` or when nothing
    else is legal."""
    def act(env, obs, rng):
        legal = _legal(obs, env_kind(env))
        if env_kind(env) == REWRITE:
            stop = len(obs["action_mask"]) - 1
            moves = legal[legal != stop]
            if len(moves) == 0 or rng.random() < stop_prob:
                return int(stop)
            return int(rng.choice(moves))
        return int(rng.choice(legal))
    return act


def greedy_policy() -> Policy:
    """Rewriting: the legal candidate with the lowest look-ahead cost (stop if none improves);
    placement: the first legal device."""
    def act(env, obs, rng):
        legal = _legal(obs, env_kind(env))
        if env_kind(env) != REWRITE:
            return int(legal[0])
        stop = len(obs["action_mask"]) - 1
        index = env.unwrapped.index
        best, best_cost = stop, index.cost
        for a in legal[legal != stop]:
            c = index.preview(int(a)).cost
            if c < best_cost:
                best, best_cost = int(a), c
        return best
    return act


def epsilon_policy(base: Policy, eps: float, explore: Policy | None = None) -> Policy:
    """With probability ``eps`` the ``explore`` policy (default random), else ``base``."""
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"epsilon must be in [0, 1], got {eps}")
    explore = explore or random_policy()

    def act(env, obs, rng):
        return explore(env, obs, rng) if rng.random() < eps else base(env, obs, rng)
    return act


POLICIES = {"random": lambda eps: random_policy(), "greedy": lambda eps: greedy_policy(),
            "epsilon_greedy": lambda eps: epsilon_policy(greedy_policy(), eps)}


def make_policy(name: str, eps: float = 0.3) -> Policy:
    if name not in POLICIES:
        raise ValueError(f"unknown behaviour policy {name!r}; valid: {sorted(POLICIES)}")
    return POLICIES[name](eps)


# ----------------------------------------------------------------------------- store


@dataclasses.dataclass
class Replay:
    """Ragged replay store (see the module docstring for every array)."""

    meta: dict
    node_features: np.ndarray
    node_offset: np.ndarray      # int64 [S+1]
    edge_features: np.ndarray
    senders: np.ndarray          # int32, local positions
    receivers: np.ndarray
    edge_offset: np.ndarray      # int64 [S+1]
    globals: np.ndarray          # [S, G]
    action_mask: np.ndarray      # int8 [S, A+1]
    cost: np.ndarray             # float64 [S]
    candidate_rule: np.ndarray   # int32 [S, A] (rewrite) or [S, 0]
    candidate_nodes: np.ndarray  # int32 [S, A, K] (rewrite) or [S, 0, 0]
    candidate_reward: np.ndarray  # float32 [S, A] (rewrite) or [S, 0]
    carried_mask: np.ndarray     # uint8 [S, H, A+1]
    state_of: np.ndarray         # int64 [T] state index of s_t
    action: np.ndarray           # int32 [T]
    reward: np.ndarray           # float32 [T]
    terminated: np.ndarray       # bool [T]
    truncated: np.ndarray        # bool [T]
    episode_start: np.ndarray    # int64 [N] state index of s_0
    episode_len: np.ndarray      # int64 [N] steps
    episode_graph: np.ndarray    # int64 [N] index into meta["graphs"]

    @property
    def kind(self) -> str:
        return self.meta["kind"]

    @property
    def num_slots(self) -> int:
        """A: non-stop action slots."""
        return int(self.action_mask.shape[1]) - 1

    @property
    def num_states(self) -> int:
        return len(self.globals)

    @property
    def num_transitions(self) -> int:
        return len(self.action)

    @property
    def num_episodes(self) -> int:
        return len(self.episode_len)

    @property
    def horizon(self) -> int:
        return int(self.carried_mask.shape[1])

    def state_obs(self, i: int) -> dict[str, np.ndarray]:
        """State ``i`` as an observation dict for `encoders.graphs.batch_observations`."""
        n0, n1 = self.node_offset[i], self.node_offset[i + 1]
        e0, e1 = self.edge_offset[i], self.edge_offset[i + 1]
        obs = {"node_features": self.node_features[n0:n1], "edge_features": self.edge_features[e0:e1],
               "senders": self.senders[e0:e1], "receivers": self.receivers[e0:e1],
               "n_node": np.array([n1 - n0], np.int32), "n_edge": np.array([e1 - e0], np.int32),
               "globals": self.globals[i], "action_mask": self.action_mask[i]}
        if self.kind == REWRITE:
            obs["candidate_rule"] = self.candidate_rule[i]
            obs["candidate_nodes"] = self.candidate_nodes[i]
            obs["candidate_reward"] = self.candidate_reward[i]
        return obs

    def transition_index(self) -> np.ndarray:
        """int64 [N+1]: transitions of episode k are ``[idx[k], idx[k+1])``."""
        return np.concatenate([[0], np.cumsum(self.episode_len)]).astype(np.int64)

    # -------------------------------------------------------------- windows
    def windows(self, starts: np.ndarray, length: int) -> dict[str, np.ndarray]:
        """Sequences of ``length`` steps starting at transitions ``starts`` [B].

        Returns state [B, length+1] (state indices; clamped to the episode's last state),
        action/reward/terminated [B, length], valid [B, length] (1 inside the episode),
        next_mask [B, length, A+1] (carried-slot legality, `carried_mask` of s_0)."""
        if length > self.horizon:
            raise ValueError(f"window length {length} exceeds the store's mask horizon {self.horizon}")
        starts = np.asarray(starts, np.int64)
        ep_of = np.searchsorted(self.transition_index(), starts, side="right") - 1
        t_idx = self.transition_index()
        ep_end = t_idx[ep_of + 1]                                   # exclusive
        steps = starts[:, None] + np.arange(length)[None]            # [B, L]
        valid = steps < ep_end[:, None]
        steps_c = np.minimum(steps, ep_end[:, None] - 1)
        s0 = self.state_of[starts]
        last_state = self.episode_start[ep_of] + self.episode_len[ep_of]
        states = np.minimum(s0[:, None] + np.arange(length + 1)[None], last_state[:, None])
        return {"state": states, "action": self.action[steps_c], "reward": np.where(valid, self.reward[steps_c], 0.0),
                "terminated": np.where(valid, self.terminated[steps_c], False), "valid": valid,
                "next_mask": self.carried_mask[s0][:, :length] * valid[..., None]}

    # -------------------------------------------------------------- subsets / io
    def select_episodes(self, episodes: Sequence[int]) -> "Replay":
        """A new store holding only ``episodes`` (indices), re-indexed."""
        episodes = np.asarray(episodes, np.int64)
        t_idx = self.transition_index()
        states = np.concatenate([np.arange(self.episode_start[k], self.episode_start[k] + self.episode_len[k] + 1)
                                 for k in episodes]) if len(episodes) else np.zeros(0, np.int64)
        trans = np.concatenate([np.arange(t_idx[k], t_idx[k + 1]) for k in episodes]) if len(episodes) else np.zeros(0, np.int64)
        new_of_old = np.full(self.num_states, -1, np.int64)
        new_of_old[states] = np.arange(len(states))
        nsl = [slice(self.node_offset[i], self.node_offset[i + 1]) for i in states]
        esl = [slice(self.edge_offset[i], self.edge_offset[i + 1]) for i in states]
        cat = lambda a, sl: np.concatenate([a[s] for s in sl]) if sl else a[:0]  # noqa: E731
        offs = lambda sl: np.concatenate([[0], np.cumsum([s.stop - s.start for s in sl])]).astype(np.int64)  # noqa: E731
        return Replay(
            meta=dict(self.meta), node_features=cat(self.node_features, nsl), node_offset=offs(nsl),
            edge_features=cat(self.edge_features, esl), senders=cat(self.senders, esl),
            receivers=cat(self.receivers, esl), edge_offset=offs(esl), globals=self.globals[states],
            action_mask=self.action_mask[states], cost=self.cost[states], candidate_rule=self.candidate_rule[states],
            candidate_nodes=self.candidate_nodes[states], candidate_reward=self.candidate_reward[states],
            carried_mask=self.carried_mask[states],
            state_of=new_of_old[self.state_of[trans]], action=self.action[trans], reward=self.reward[trans],
            terminated=self.terminated[trans], truncated=self.truncated[trans],
            episode_start=new_of_old[self.episode_start[episodes]], episode_len=self.episode_len[episodes],
            episode_graph=self.episode_graph[episodes])

    def split_by_episode(self, val_fraction: float, seed: int = 0) -> tuple["Replay", "Replay"]:
        """(train, validation) with disjoint episodes; at least one episode in each when
        there are >= 2 episodes and ``val_fraction`` > 0."""
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        perm = np.random.default_rng(seed).permutation(self.num_episodes)
        n_val = int(round(val_fraction * self.num_episodes))
        if val_fraction > 0 and self.num_episodes >= 2:
            n_val = min(max(n_val, 1), self.num_episodes - 1)
        return self.select_episodes(np.sort(perm[n_val:])), self.select_episodes(np.sort(perm[:n_val]))

    def save(self, path: str | os.PathLike) -> str:
        """Write a compressed ``.npz`` (atomically); returns the path."""
        path = os.fspath(path)
        if not path.endswith(".npz"):
            path += ".npz"
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        arrays = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "meta"}
        tmp = path + ".tmp.npz"
        np.savez_compressed(tmp, meta=np.array(json.dumps(self.meta)), **arrays)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Replay":
        path = os.fspath(path)
        if not os.path.exists(path):
            raise FileNotFoundError(f"replay file {path}: not found")
        try:
            with np.load(path, allow_pickle=False) as f:
                data = {k: f[k] for k in f.files}
        except Exception as e:  # zip / npy errors of many kinds
            raise ValueError(f"replay file {path}: unreadable ({type(e).__name__}: {e})") from None
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names if n not in data]
        if missing:
            raise ValueError(f"replay file {path}: missing arrays {missing}")
        meta = json.loads(str(data.pop("meta")))
        return cls(meta=meta, **{n: data[n] for n in names if n != "meta"})


# ----------------------------------------------------------------------------- collection


def _carried(ids: list, masks: list, kind: str, horizon: int, A: int, has_stop: bool) -> np.ndarray:
    """carried_mask [L+1, H, A+1] for one episode's states (ids: candidate identities per state)."""
    L1 = len(masks)
    out = np.zeros((L1, horizon, A + 1), np.uint8)
    sets = [set(x) for x in ids] if kind == REWRITE else None
    for i in range(L1):
        for h in range(1, horizon + 1):
            j = i + h
            if j >= L1:
                break
            if kind == REWRITE:
                out[i, h - 1, :len(ids[i])] = [c in sets[j] for c in ids[i]]
            else:
                out[i, h - 1, :A] = masks[j][:A]
            out[i, h - 1, A] = 1 if has_stop else 0
    return out


def collect(env_id: str, graphs: Sequence[str], episodes: int, policy: Policy | str = "random", seed: int = 0,
            env_kwargs: Mapping[str, Any] | None = None, horizon: int = 10, progress: bool = False) -> Replay:
    """Run ``episodes`` episodes of ``policy`` (spread over ``graphs``) in ``env_id``.

    One environment per graph (``gym.make(env_id, graph=g, **env_kwargs)``); ``graphs`` may
    be empty to use the environment's default. Seeded: the same arguments give the same store."""
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    if env_id not in gym.registry:
        import difflib
        close = difflib.get_close_matches(env_id, list(gym.registry), n=2)
        raise ValueError(f"unknown environment {env_id!r}" + (f"; did you mean {close}?" if close else ""))
    policy = make_policy(policy) if isinstance(policy, str) else policy
    graphs = list(graphs) or [""]
    envs = [gym.make(env_id, **({"graph": g} if g else {}), **dict(env_kwargs or {})) for g in graphs]
    kind = env_kind(envs[0])
    rng = np.random.default_rng(seed)
    cols: dict[str, list] = {k: [] for k in ("nf", "ef", "snd", "rcv", "glob", "mask", "cost", "crule", "cnodes",
                                                "creward", "carried", "state_of", "action", "reward", "term", "trunc",
                                                "ep_start", "ep_len", "ep_graph")}
    n_states = 0
    from worldmodels.logging import progress as bar
    with bar(total=episodes, desc="collect", enabled=progress, unit="ep") as pbar:
        for ep in range(episodes):
            g = ep % len(envs)
            env = envs[g]
            obs, info = env.reset(seed=int(rng.integers(2**31)))
            A = len(obs["action_mask"]) - 1 if kind == REWRITE else len(obs["action_mask"])
            states, ids, costs = [standard_obs(obs)], [], []
            ids.append(_candidate_ids(env, A) if kind == REWRITE else None)
            costs.append(float(info.get("cost_ms", np.nan)))
            cols["ep_start"].append(n_states)
            cols["ep_graph"].append(g)
            steps = 0
            while True:
                a = int(policy(env, obs, rng))
                cols["state_of"].append(n_states + steps)
                obs, r, term, trunc, info = env.step(a)
                steps += 1
                cols["action"].append(a)
                cols["reward"].append(r)
                cols["term"].append(term)
                cols["trunc"].append(trunc)
                states.append(standard_obs(obs))
                ids.append(_candidate_ids(env, A) if kind == REWRITE else None)
                costs.append(float(info.get("cost_ms", np.nan)))
                if term or trunc:
                    break
            cols["ep_len"].append(steps)
            masks = [s["action_mask"] for s in states]
            cols["carried"].append(_carried(ids, masks, kind, horizon, A, kind == REWRITE))
            for s, c in zip(states, costs):
                cols["nf"].append(s["node_features"])
                cols["ef"].append(s["edge_features"])
                cols["snd"].append(s["senders"])
                cols["rcv"].append(s["receivers"])
                cols["glob"].append(s["globals"])
                cols["mask"].append(s["action_mask"])
                cols["cost"].append(c)
                cols["crule"].append(s.get("candidate_rule", np.zeros(0, np.int32)))
                cols["cnodes"].append(s.get("candidate_nodes", np.zeros((0, 0), np.int32)))
                cols["creward"].append(s.get("candidate_reward", np.zeros(0, np.float32)))
            n_states += len(states)
            pbar.update(1)
    for env in envs:
        env.close()
    off = lambda xs: np.concatenate([[0], np.cumsum([len(x) for x in xs])]).astype(np.int64)  # noqa: E731
    meta = {"env_id": env_id, "graphs": graphs, "kind": kind, "env_kwargs": dict(env_kwargs or {}),
            "seed": seed, "num_rules": len(envs[0].unwrapped.rules) if kind == REWRITE else 0}
    return Replay(
        meta=meta, node_features=np.concatenate(cols["nf"]), node_offset=off(cols["nf"]),
        edge_features=np.concatenate(cols["ef"]), senders=np.concatenate(cols["snd"]).astype(np.int32),
        receivers=np.concatenate(cols["rcv"]).astype(np.int32), edge_offset=off(cols["ef"]),
        globals=np.stack(cols["glob"]), action_mask=np.stack(cols["mask"]), cost=np.array(cols["cost"]),
        candidate_rule=np.stack(cols["crule"]), candidate_nodes=np.stack(cols["cnodes"]),
        candidate_reward=np.stack(cols["creward"]).astype(np.float32),
        carried_mask=np.concatenate(cols["carried"]), state_of=np.array(cols["state_of"], np.int64),
        action=np.array(cols["action"], np.int32), reward=np.array(cols["reward"], np.float32),
        terminated=np.array(cols["term"], bool), truncated=np.array(cols["trunc"], bool),
        episode_start=np.array(cols["ep_start"], np.int64), episode_len=np.array(cols["ep_len"], np.int64),
        episode_graph=np.array(cols["ep_graph"], np.int64))
