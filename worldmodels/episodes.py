"""The replay writer of the training loop: real episodes recorded step by step, packed into a
`worldmodels.replay.Replay` (the same layout as `worldmodels.replay.collect`), and a bounded
store of the most recent episodes.

The field list of a packed store exists once, in `worldmodels.replay.Replay`; this module
fills it from `EpisodeRecord`s of any environment kind (rewriting: candidate identities for
the carried-slot mask targets; placement: the masks themselves).
"""
from __future__ import annotations

import numpy as np

from worldmodels.replay import REWRITE, Replay, _carried

#: per-state arrays of a standard observation, keyed by their `Replay` field
STATE_FIELDS = {"node_features": "node_features", "edge_features": "edge_features", "senders": "senders",
                "receivers": "receivers", "globals": "globals", "action_mask": "action_mask",
                "candidate_rule": "candidate_rule", "candidate_nodes": "candidate_nodes",
                "candidate_reward": "candidate_reward"}
_EMPTY = {"candidate_rule": np.zeros(0, np.int32), "candidate_nodes": np.zeros((0, 0), np.int32),
          "candidate_reward": np.zeros(0, np.float32)}


class EpisodeRecord:
    """One real episode being recorded: its states (`worldmodels.replay.standard_obs` dicts,
    action mask with the stop slot, [A+1]), the candidate identities of each state (rewriting;
    None for placement), each state's cost (rewriting: ms; placement: nan) and the
    transitions (action, reward, terminated, truncated)."""

    def __init__(self, graph: int):
        self.graph, self.states, self.ids, self.costs = graph, [], [], []
        self.actions, self.rewards, self.terms, self.truncs = [], [], [], []

    def add_state(self, std_obs: dict, ids, cost: float) -> None:
        self.states.append(std_obs)
        self.ids.append(ids)
        self.costs.append(float(cost))

    def add_step(self, action: int, reward: float, terminated: bool, truncated: bool) -> None:
        self.actions.append(int(action))
        self.rewards.append(float(reward))
        self.terms.append(bool(terminated))
        self.truncs.append(bool(truncated))


def episodes_to_replay(records: list[EpisodeRecord], meta: dict, horizon: int) -> Replay:
    """Pack finished episodes (each with at least one step) into a `Replay`; ``meta["kind"]``
    says how mask targets are built (rewriting: candidate identities; placement: masks)."""
    kind = meta["kind"]
    cols: dict[str, list] = {k: [] for k in (*STATE_FIELDS, "cost", "carried", "state_of")}
    ep_start, n = [], 0
    for r in records:
        A = len(r.states[0]["action_mask"]) - 1
        ep_start.append(n)
        cols["state_of"].extend(range(n, n + len(r.actions)))
        cols["carried"].append(_carried(r.ids, [s["action_mask"] for s in r.states], kind, horizon, A,
                                        kind == REWRITE))
        for s, c in zip(r.states, r.costs):
            for k in STATE_FIELDS:
                cols[k].append(s[k] if k in s else _EMPTY[k])
            cols["cost"].append(c)
        n += len(r.states)
    off = lambda xs: np.concatenate([[0], np.cumsum([len(x) for x in xs])]).astype(np.int64)  # noqa: E731
    return Replay(
        meta=dict(meta), node_features=np.concatenate(cols["node_features"]), node_offset=off(cols["node_features"]),
        edge_features=np.concatenate(cols["edge_features"]),
        senders=np.concatenate(cols["senders"]).astype(np.int32),
        receivers=np.concatenate(cols["receivers"]).astype(np.int32), edge_offset=off(cols["edge_features"]),
        globals=np.stack(cols["globals"]), action_mask=np.stack(cols["action_mask"]), cost=np.array(cols["cost"]),
        candidate_rule=np.stack(cols["candidate_rule"]), candidate_nodes=np.stack(cols["candidate_nodes"]),
        candidate_reward=np.stack(cols["candidate_reward"]).astype(np.float32),
        carried_mask=np.concatenate(cols["carried"]), state_of=np.array(cols["state_of"], np.int64),
        action=np.concatenate([np.asarray(r.actions, np.int32) for r in records]),
        reward=np.concatenate([np.asarray(r.rewards, np.float32) for r in records]),
        terminated=np.concatenate([np.asarray(r.terms, bool) for r in records]),
        truncated=np.concatenate([np.asarray(r.truncs, bool) for r in records]),
        episode_start=np.array(ep_start, np.int64), episode_len=np.array([len(r.actions) for r in records], np.int64),
        episode_graph=np.array([r.graph for r in records], np.int64))


def concat_replays(a: Replay | None, b: Replay) -> Replay:
    """Replay with the episodes of ``a`` then ``b`` (``a`` may be None)."""
    if a is None:
        return b
    ns, cat = a.num_states, np.concatenate
    return Replay(
        meta=a.meta, node_features=cat([a.node_features, b.node_features]),
        node_offset=cat([a.node_offset, b.node_offset[1:] + a.node_offset[-1]]),
        edge_features=cat([a.edge_features, b.edge_features]), senders=cat([a.senders, b.senders]),
        receivers=cat([a.receivers, b.receivers]), edge_offset=cat([a.edge_offset, b.edge_offset[1:] + a.edge_offset[-1]]),
        globals=cat([a.globals, b.globals]), action_mask=cat([a.action_mask, b.action_mask]), cost=cat([a.cost, b.cost]),
        candidate_rule=cat([a.candidate_rule, b.candidate_rule]), candidate_nodes=cat([a.candidate_nodes, b.candidate_nodes]),
        candidate_reward=cat([a.candidate_reward, b.candidate_reward]),
        carried_mask=cat([a.carried_mask, b.carried_mask]), state_of=cat([a.state_of, b.state_of + ns]),
        action=cat([a.action, b.action]), reward=cat([a.reward, b.reward]), terminated=cat([a.terminated, b.terminated]),
        truncated=cat([a.truncated, b.truncated]), episode_start=cat([a.episode_start, b.episode_start + ns]),
        episode_len=cat([a.episode_len, b.episode_len]), episode_graph=cat([a.episode_graph, b.episode_graph]))


def add_bounded(store: Replay | None, new: Replay, capacity: int) -> Replay:
    """``store`` with the episodes of ``new`` appended, keeping only the ``capacity`` most recent."""
    out = concat_replays(store, new)
    if out.num_episodes > capacity:
        out = out.select_episodes(np.arange(out.num_episodes - capacity, out.num_episodes))
    return out
