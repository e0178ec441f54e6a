"""The Dyna-style training loop: real data -> world model -> controller in imagination.

One *iteration* (``mode=model_based``):

1. collect ``env.num_envs x controller.ppo.rollout_len`` real steps with the current
   controller (plus epsilon exploration, ``loop.explore_eps``); the environments are reset
   at the start of every iteration, so an iteration is a pure function of the checkpointed
   state (exact resume);
2. measure the world model's fidelity on these fresh episodes (not yet trained on), add
   them to the replay store and train the model ``loop.model_updates_per_iter`` steps;
3. train the controller ``loop.controller_updates_per_iter`` times in imagination: rollouts
   of the imagined env start from encoded real replay states and are truncated after the
   MBPO-style horizon ``h(i)`` (linear from ``loop.horizon_min`` to ``loop.imagined_horizon``
   over the iterations ``loop.horizon_schedule``); a fraction ``loop.real_ratio`` of the
   controller updates uses the latest real batch (re-encoded with the updated encoder);
4. every ``loop.eval_every`` real steps: validate on the real simulator (cost reduction and
   return of the deterministic controller per training and held-out graph, the imagined
   return of the same controller from the same start and the gap) and log.

``controller.train_env=real`` in model-based mode trains the controller on the (re-encoded)
real batches only while the world model is still learned and validated (``real_ratio`` 1).
``mode=model_free`` runs the same controller algorithm on the real environment only
(PPO: the GNN policy over raw graph observations; CMA-ES: fitness = real episodes), with
the same logging against real environment steps.

Controllers in model-based mode act on the *model's* observation of a state (the
imagined env has no graphs): ``{"latent": [Z], "slot_rule": int32 [A], "slot_features":
[A, D+1], "action_mask": int8 [A+1]}`` - the encoder latent and the slot descriptions of the
candidate rewrites (`dynamics.heads`: pooled node embeddings and the candidate's immediate
reward, so a policy can rank candidates as greedy does); in imagination the latent is the predicted one and
the slots are those carried from the start state. A real observation is encoded the same way.

Resume: the state (counters, RNG key, world-model params/optimizer, controller state) is
an orbax checkpoint; the replay store is ``replay_<step>.npz`` beside it (written first).
Scalars are buffered and written to TensorBoard only after the checkpoint that covers them
(and kept in its metadata), and a resumed run skips steps already in the event files, so
curves have no duplicated and no lost steps.
"""
from __future__ import annotations

import glob
import os
import struct as _struct
import time
from typing import Any

import flax.linen as nn
import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np

import systems_envs  # noqa: F401  (registers the environments)
from controllers.base import TimeStep, get_mask, make_controller, next_pow2, random_legal_action, stack_observations
from controllers.ppo import PPO, PPOState
from controllers.rollout import Transition, collect_imagined, reset_imagined
from dynamics import SlotDescription
from worldmodels.config import Config, config_hash, flatten, to_dict

MODES = ("model_based", "model_free")
LEARNED = ("ppo", "cmaes")
CONTROLLERS = ("ppo", "cmaes", "planner", "random")


# ============================================================================ latent controllers


class LatentPolicyValue(nn.Module):
    """Policy/value over the model observation: score of slot j = MLP([rule emb, slot
    features, latent]); stop and value from the latent. Returns (logits [A+1], value [])."""

    hidden: int = 64
    num_rules: int = 256

    @nn.compact
    def __call__(self, obs):
        z = jnp.asarray(obs["latent"], jnp.float32)
        f = jnp.asarray(obs["slot_features"], jnp.float32)
        rule = jnp.asarray(obs["slot_rule"], jnp.int32)
        a = rule.shape[0]
        emb = nn.Embed(self.num_rules + 1, self.hidden, name="rule_emb")(jnp.clip(rule + 1, 0, self.num_rules))
        zb = nn.relu(nn.Dense(self.hidden, name="z_in")(z))
        x = jnp.concatenate([emb, f, jnp.broadcast_to(zb, (a, self.hidden))], -1)
        x = nn.relu(nn.Dense(self.hidden, name="slot_h1")(x))
        x = nn.relu(nn.Dense(self.hidden, name="slot_h2")(x))
        scores = nn.Dense(1, name="slot_out")(x)[:, 0]
        stop = nn.Dense(1, name="stop_out")(nn.relu(nn.Dense(self.hidden, name="stop_h")(zb)))
        value = nn.Dense(1, name="value_out")(nn.relu(nn.Dense(self.hidden, name="value_h")(zb)))[0]
        return jnp.concatenate([scores, stop]), value


class LatentPPO(PPO):
    """`controllers.ppo.PPO` (same update, same hyper-parameters) over model observations."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.net = LatentPolicyValue(hidden=kw.get("hidden", 64), num_rules=kw.get("num_rules", 256))

    def init(self, key, example_obs) -> PPOState:
        get_mask(example_obs)
        params = self.net.init(key, example_obs)
        return PPOState(params=params, opt_state=self.tx.init(params), step=jnp.zeros((), jnp.int32))


def latent_features(obs):
    """CMA-ES features of a model observation: context = latent, action descriptions =
    [slot features, sin/cos(rule), stop indicator]."""
    ctx = jnp.concatenate([jnp.asarray(obs["latent"], jnp.float32).reshape(-1), jnp.ones(1)])
    f = jnp.asarray(obs["slot_features"], jnp.float32)
    rule = jnp.asarray(obs["slot_rule"], jnp.float32)[:, None]
    cand = jnp.concatenate([f, jnp.sin(rule), jnp.cos(rule), jnp.zeros((f.shape[0], 1))], -1)
    stop = jnp.zeros((1, cand.shape[1])).at[0, -1].set(1.0)
    return ctx, jnp.concatenate([cand, stop], 0)


def model_obs(latent, slots: SlotDescription, mask) -> dict:
    return {"latent": latent, "slot_rule": jnp.where(slots.valid, slots.rule, -1).astype(jnp.int32),
            "slot_features": slots.features, "action_mask": jnp.asarray(mask).astype(jnp.int8)}


def obs_to_start(obs):
    """A model observation -> `worldmodels.imagined_env.Start`; a start-pool entry
    (`Loop.start_pool`) also holds the slot conflicts and the dynamics' initial carry."""
    from worldmodels.imagined_env import Start
    rule = jnp.asarray(obs["slot_rule"], jnp.int32)
    slots = SlotDescription(rule, jnp.asarray(obs["slot_features"]), rule >= 0, obs.get("slot_conflicts"))
    return Start(jnp.asarray(obs["latent"]), slots, jnp.asarray(obs["action_mask"]) > 0, obs.get("carry"))


class DreamEnv:
    """The imagined env (`worldmodels.imagined_env.ImaginedEnv`) with model observations,
    starts given as model observations, and truncation after ``h`` steps where
    ``env_params = (world-model params, h)`` (``h`` traced: no recompile per horizon)."""

    def __init__(self, wm, max_steps: int):
        from worldmodels.imagined_env import ImaginedEnv
        self.inner = ImaginedEnv(wm, max_steps=max_steps)

    def reset(self, env_params, key, start):
        p, _ = env_params
        st = obs_to_start(start)
        s, ts = self.inner.reset(p, key, st)
        f = jnp.bool_(False)
        return (s, st.slots), TimeStep(model_obs(ts.observation, st.slots, ts.action_mask), jnp.float32(0.0), f, f)

    def step(self, env_params, state, action, key):
        p, h = env_params
        s, slots = state
        s2, ts = self.inner.step(p, s, action, key)
        trunc = ts.truncated | ((s2.t >= h) & ~ts.terminated)
        return (s2, slots), TimeStep(model_obs(ts.observation, slots, ts.action_mask), ts.reward, ts.terminated, trunc)


# ============================================================================ replay helpers


class EpisodeRecord:
    """One real episode being recorded (standard observations, candidate ids, costs, steps)."""

    def __init__(self, graph: int):
        self.graph, self.states, self.ids, self.costs = graph, [], [], []
        self.actions, self.rewards, self.terms, self.truncs = [], [], [], []

    def add_state(self, obs, env, cost, A):
        from worldmodels.replay import _candidate_ids, standard_obs
        self.states.append(standard_obs(obs))
        self.ids.append(_candidate_ids(env, A))
        self.costs.append(float(cost))


def episodes_to_replay(records: list[EpisodeRecord], meta: dict, horizon: int):
    """Pack finished episodes into a `worldmodels.replay.Replay` (same layout as `collect`)."""
    from worldmodels.replay import REWRITE, Replay, _carried
    cols: dict[str, list] = {k: [] for k in ("nf", "ef", "snd", "rcv", "glob", "mask", "cost", "crule", "cnodes",
                                                "creward", "carried", "state_of")}
    ep_start, n = [], 0
    for r in records:
        A = len(r.states[0]["action_mask"]) - 1
        ep_start.append(n)
        cols["state_of"].extend(range(n, n + len(r.actions)))
        cols["carried"].append(_carried(r.ids, [s["action_mask"] for s in r.states], REWRITE, horizon, A, True))
        for s, c in zip(r.states, r.costs):
            for k, name in (("nf", "node_features"), ("ef", "edge_features"), ("snd", "senders"), ("rcv", "receivers"),
                            ("glob", "globals"), ("mask", "action_mask"), ("crule", "candidate_rule"),
                            ("cnodes", "candidate_nodes"), ("creward", "candidate_reward")):
                cols[k].append(s[name])
            cols["cost"].append(c)
        n += len(r.states)
    off = lambda xs: np.concatenate([[0], np.cumsum([len(x) for x in xs])]).astype(np.int64)  # noqa: E731
    return Replay(
        meta=dict(meta), node_features=np.concatenate(cols["nf"]), node_offset=off(cols["nf"]),
        edge_features=np.concatenate(cols["ef"]), senders=np.concatenate(cols["snd"]).astype(np.int32),
        receivers=np.concatenate(cols["rcv"]).astype(np.int32), edge_offset=off(cols["ef"]),
        globals=np.stack(cols["glob"]), action_mask=np.stack(cols["mask"]), cost=np.array(cols["cost"]),
        candidate_rule=np.stack(cols["crule"]), candidate_nodes=np.stack(cols["cnodes"]),
        candidate_reward=np.stack(cols["creward"]).astype(np.float32),
        carried_mask=np.concatenate(cols["carried"]), state_of=np.array(cols["state_of"], np.int64),
        action=np.concatenate([np.asarray(r.actions, np.int32) for r in records]),
        reward=np.concatenate([np.asarray(r.rewards, np.float32) for r in records]),
        terminated=np.concatenate([np.asarray(r.terms, bool) for r in records]),
        truncated=np.concatenate([np.asarray(r.truncs, bool) for r in records]),
        episode_start=np.array(ep_start, np.int64), episode_len=np.array([len(r.actions) for r in records], np.int64),
        episode_graph=np.array([r.graph for r in records], np.int64))


def concat_replays(a, b):
    """Replay with the episodes of ``a`` then ``b`` (``a`` may be None)."""
    if a is None:
        return b
    from worldmodels.replay import Replay
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


# ============================================================================ TensorBoard reading


def read_scalars(logdir: str) -> dict[str, list[tuple[int, float]]]:
    """All scalars in the event files of ``logdir`` (not sub-directories), in file order:
    ``{tag: [(step, value), ...]}``. A truncated last record (a killed writer) is ignored."""
    from tensorboardX.proto.event_pb2 import Event
    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
        with open(path, "rb") as f:
            data = f.read()
        i = 0
        while i + 12 <= len(data):
            (n,) = _struct.unpack("<Q", data[i:i + 8])
            if i + 12 + n + 4 > len(data):
                break
            ev = Event.FromString(data[i + 12:i + 12 + n])
            i += 12 + n + 4
            for v in ev.summary.value:
                if v.HasField("simple_value"):
                    out.setdefault(v.tag, []).append((int(ev.step), float(v.simple_value)))
    return out


# ============================================================================ the loop


def graph_list(text: str) -> list[str]:
    return [g.strip() for g in text.split(",") if g.strip()]


def horizon_at(cfg: Config, iteration: int) -> int:
    """MBPO-style schedule: ``horizon_min`` until iteration a, linear to ``imagined_horizon`` at b."""
    lo, hi = cfg.loop.horizon_min, cfg.loop.imagined_horizon
    a, b = cfg.loop.horizon_schedule
    frac = 1.0 if b <= a else min(max((iteration - a) / (b - a), 0.0), 1.0)
    return int(round(lo + frac * (hi - lo)))


def validate_config(cfg: Config) -> None:
    c, lp = cfg.controller, cfg.loop
    if lp.mode not in MODES:
        raise ValueError(f"--loop.mode must be one of {MODES}, got {lp.mode!r}")
    if c.name not in CONTROLLERS:
        raise ValueError(f"--controller.name must be one of {CONTROLLERS} in the training loop, got {c.name!r}")
    if c.train_env not in ("real", "imagined"):
        raise ValueError(f"--controller.train_env must be 'real' or 'imagined', got {c.train_env!r}")
    if lp.mode == "model_free" and c.name == "planner":
        raise ValueError("--controller.name planner needs a world model: use --loop.mode model_based")
    if cfg.env.name != "GraphRewrite-v0":
        raise ValueError(f"the training loop supports --env.name GraphRewrite-v0 only, got {cfg.env.name!r}")
    if not graph_list(cfg.env.graph):
        raise ValueError("--env.graph: give at least one training graph (comma-separated built-in names or files)")
    if not 0.0 <= lp.real_ratio <= 1.0 or not 0.0 <= lp.explore_eps <= 1.0:
        raise ValueError("--loop.real_ratio and --loop.explore_eps must be in [0, 1]")
    if lp.horizon_min < 1 or lp.imagined_horizon < lp.horizon_min:
        raise ValueError("need 1 <= --loop.horizon_min <= --loop.imagined_horizon")
    n = lp.imagined_envs * c.ppo.rollout_len
    if c.name == "ppo" and (n % c.ppo.num_minibatches or (cfg.env.num_envs * c.ppo.rollout_len) % c.ppo.num_minibatches):
        raise ValueError("--controller.ppo.num_minibatches must divide imagined_envs*rollout_len and num_envs*rollout_len")
    if max(lp.fidelity_ks) > lp.replay_horizon:
        raise ValueError(f"--loop.fidelity_ks {lp.fidelity_ks} exceed --loop.replay_horizon {lp.replay_horizon}")


class Loop:
    """The Dyna loop of one run (see the module docstring). ``run()`` resumes from the last
    checkpoint in ``logdir/checkpoints`` if there is one and returns the summary dict."""

    def __init__(self, cfg: Config, logdir: str, echo=print):
        validate_config(cfg)
        self.cfg, self.logdir, self.echo = cfg, logdir, echo
        self.model_based = cfg.loop.mode == "model_based"
        self.graphs = graph_list(cfg.env.graph)
        self.heldout = graph_list(cfg.env.heldout)
        self.B, self.T = cfg.env.num_envs, cfg.controller.ppo.rollout_len
        self.envs = [self._make_env(self.graphs) for _ in range(self.B)]
        e0 = self.envs[0].unwrapped
        self.A = e0.max_candidates
        self.num_rules = len(e0.rules)
        self.meta = {"env_id": cfg.env.name, "graphs": self.graphs, "kind": "rewrite", "seed": cfg.seed,
                     "num_rules": self.num_rules, "env_kwargs": self.env_kwargs}
        self.wm = self.trainer = self.dream = None
        self.replay = None
        self.pending: list[list] = []
        self.logged_max: dict[str, int] = {}
        self._jit_cache: dict = {}

    # ------------------------------------------------------------------ environments
    @property
    def env_kwargs(self) -> dict:
        c = self.cfg.env
        kw = {"max_steps": c.max_steps, "max_candidates": c.max_candidates}
        if c.node_capacity:
            kw["max_nodes"] = c.node_capacity
        if c.edge_capacity:
            kw["max_edges"] = c.edge_capacity
        return kw

    def _capacity(self) -> dict:
        """One observation capacity for every env (training and held-out graphs), so the
        jitted policy and encoder compile once: twice the largest graph, a power of two."""
        if not hasattr(self, "_caps"):
            from systems_envs.graph.load import load_graph
            gs = [load_graph(g) for g in self.graphs + self.heldout]
            n = max(len(g) for g in gs)
            m = max(sum(len(x.inputs) for x in g.nodes.values()) for g in gs)
            self._caps = {"max_nodes": next_pow2(2 * n + 2), "max_edges": next_pow2(2 * m + 2)}
        return self._caps

    def _make_env(self, graphs):
        kw = dict(self.env_kwargs)
        for k, v in self._capacity().items():
            kw.setdefault(k, v)
        return gym.make(self.cfg.env.name, graph=list(graphs), **kw)

    # ------------------------------------------------------------------ model pieces
    def _init_model(self, key):
        from worldmodels.world_model import Trainer, WorldModel
        self.wm = WorldModel.create(self.cfg.model, "rewrite", self.A, self.num_rules)
        self.trainer = Trainer(self.wm)
        self.dream = DreamEnv(self.wm, max_steps=self.cfg.env.max_steps)
        wm = self.wm
        self._encode = jax.jit(lambda p, g, r, n, cr: wm.encode(p, g, r, n, r.shape[0], cr))
        return self.trainer.init(wm.init(key, self.replay))

    def encode(self, wm_params, raw_obs: list[dict]) -> dict:
        """Model observations [B, ...] of a list of real observations (one fixed capacity)."""
        from encoders.graphs import Buckets, batch_observations
        e0 = self.envs[0].unwrapped
        k = len(raw_obs)
        buckets = Buckets(nodes=(next_pow2(k * e0.max_nodes + 1),), edges=(next_pow2(k * e0.max_edges),))
        b = batch_observations(raw_obs, buckets, n_graph=k + 1)
        lat, slots = self._encode(wm_params, b.graphs, b.candidate_rule, b.candidate_nodes, b.candidate_reward)
        return model_obs(lat, slots, jnp.asarray(b.action_mask))

    def _make_agent(self):
        c = self.cfg.controller
        if c.name == "ppo":
            kw = {**to_dict(c.ppo), "num_rules": max(c.ppo.num_rules, self.num_rules + 1)}
            return LatentPPO(**kw) if self.model_based else PPO(**kw)
        if c.name == "cmaes":
            return make_controller("cmaes", c, **({"features": latent_features} if self.model_based else {}))
        if c.name == "random":
            return make_controller("random", c)
        return make_controller("planner", c, model_reset=self.dream.reset, model_step=self.dream.step)

    def _featurize(self, st, raw_obs: list[dict]):
        if self.model_based:
            return self.encode(st["wm"].params, raw_obs)
        return stack_observations(raw_obs)

    # ------------------------------------------------------------------ acting
    def _actor(self, st, greedy: bool):
        """``f(obs_batch, key) -> (action, log_prob, value)`` NumPy [B] for the current controller."""
        name, agent = self.cfg.controller.name, self.agent
        if name == "ppo":
            if "ppo_sample" not in self._jit_cache:
                def sample(state, obs, key, greedy):
                    logp, v = agent.distribution(state.params, obs)
                    a = jnp.where(greedy, jnp.argmax(logp), jax.random.categorical(key, logp)).astype(jnp.int32)
                    return a, logp[a], v
                self._jit_cache["ppo_sample"] = jax.jit(jax.vmap(sample, in_axes=(None, 0, 0, None)))
            f = self._jit_cache["ppo_sample"]
            return lambda obs, key: jax.device_get(f(st["agent"], obs, jax.random.split(key, _batch(obs)), greedy))
        if name == "cmaes":
            f = self._jit_cache.setdefault("cm_act", jax.jit(jax.vmap(agent._act, in_axes=(None, 0, 0))))
        elif name == "random":
            f = self._jit_cache.setdefault("rnd_act", jax.jit(jax.vmap(lambda s, o, k: random_legal_action(k, get_mask(o)),
                                                                        in_axes=(None, 0, 0))))
        else:
            from controllers.planner import PlannerState
            plan = self._jit_cache.setdefault("plan", jax.jit(jax.vmap(lambda s, o, k: agent._plan(s, o, k)[0],
                                                                        in_axes=(None, 0, 0))))
            h = self.cfg.controller.planner.horizon
            return lambda obs, key: (np.asarray(plan(PlannerState((st["wm"].params, jnp.int32(h))), obs,
                                                     jax.random.split(key, _batch(obs)))), 0, 0)
        s = st["agent"]
        return lambda obs, key: (np.asarray(f(s, obs, jax.random.split(key, _batch(obs)))), 0, 0)

    def _value(self, st, obs):
        if self.cfg.controller.name != "ppo":
            return np.zeros(_batch(obs), np.float32)
        f = self._jit_cache.setdefault("value", jax.jit(jax.vmap(self.agent.value, in_axes=(None, 0))))
        return np.asarray(f(st["agent"], obs), np.float32)

    # ------------------------------------------------------------------ real collection
    def collect(self, st, key, explore_eps: float, random_policy: bool = False):
        """``T`` steps in each of the ``B`` real envs (reset first, auto-reset). Returns
        (finished `EpisodeRecord`s incl. the cut last ones, PPO `Transition` [T, B] or None,
        completed-episode returns)."""
        kr, key = jax.random.split(key)
        seeds = np.asarray(jax.random.randint(kr, (self.B,), 0, 2**31 - 1))
        raw, recs = [], []
        for i, env in enumerate(self.envs):
            o, info = env.reset(seed=int(seeds[i]))
            raw.append(o)
            r = EpisodeRecord(self._graph_index(info))
            r.add_state(o, env.unwrapped, info["cost_ms"], self.A)
            recs.append(r)
        rng = np.random.default_rng(int(seeds[0]))
        act = None if random_policy else self._actor(st, greedy=False)
        done_recs, ep_returns, ep_ret = [], [], np.zeros(self.B)
        cols = {k: [] for k in Transition._fields}
        raw_steps: list[list[dict]] = []
        feats = None if random_policy else self._featurize(st, raw)
        for t in range(self.T):
            key, ka = jax.random.split(key)
            if random_policy:
                a, lp, v = np.array([_random_legal(o, rng) for o in raw]), 0, 0
            else:
                a, lp, v = act(feats, ka)
                a = np.array(a)
                for i in range(self.B):
                    if explore_eps > 0 and rng.random() < explore_eps:
                        a[i] = _random_legal(raw[i], rng)
            prev_raw = list(raw)
            rew, te, tr, er = (np.zeros(self.B, np.float32), np.zeros(self.B, bool), np.zeros(self.B, bool),
                               np.zeros(self.B, np.float32))
            finals = {}
            for i, env in enumerate(self.envs):
                o, r, term, trunc, info = env.step(int(a[i]))
                rec = recs[i]
                rec.actions.append(int(a[i])); rec.rewards.append(r); rec.terms.append(term); rec.truncs.append(trunc)
                rec.add_state(o, env.unwrapped, info["cost_ms"], self.A)
                rew[i], te[i], tr[i] = r, term, trunc
                ep_ret[i] += r
                if term or trunc:
                    er[i] = ep_ret[i]
                    ep_returns.append(ep_ret[i])
                    ep_ret[i] = 0.0
                    done_recs.append(rec)
                    if trunc and not term:
                        finals[i] = o
                    o, info = env.reset()
                    recs[i] = EpisodeRecord(self._graph_index(info))
                    recs[i].add_state(o, env.unwrapped, info["cost_ms"], self.A)
                raw[i] = o
            if not random_policy and self.cfg.controller.name == "ppo":
                raw_steps.append(list(prev_raw))
                cols["obs"].append(feats); cols["action"].append(a); cols["log_prob"].append(np.asarray(lp))
                cols["value"].append(np.asarray(v)); cols["reward"].append(rew); cols["terminated"].append(te)
                cols["truncated"].append(tr); cols["episode_return"].append(er)
                feats = self._featurize(st, raw)
                nv = self._value(st, feats)
                if finals:
                    nv_f = self._value(st, self._featurize(st, [finals.get(i, raw[i]) for i in range(self.B)]))
                    nv = np.where([i in finals for i in range(self.B)], nv_f, nv)
                cols["next_value"].append(np.where(te, 0.0, nv).astype(np.float32))
            elif not random_policy:
                feats = self._featurize(st, raw)
        for rec in recs:  # cut episodes: keep them, marked truncated
            if rec.actions:
                rec.truncs[-1] = True
                done_recs.append(rec)
        batch = None
        if cols["obs"]:
            stack = lambda xs: jax.tree_util.tree_map(lambda *a: np.stack([np.asarray(x) for x in a]), *xs)  # noqa: E731
            batch = Transition(obs=stack(cols["obs"]), **{k: np.stack(cols[k]) for k in Transition._fields if k != "obs"})
        return done_recs, batch, ep_returns, raw_steps

    def _graph_index(self, info) -> int:
        name = info.get("graph", "")
        return self.graphs.index(name) if name in self.graphs else 0

    # ------------------------------------------------------------------ controller training
    def _dream_ppo_fn(self):
        if "dream_ppo" not in self._jit_cache:
            agent, dream, n, T = self.agent, self.dream, self.cfg.loop.imagined_envs, self.T

            def f(agent_state, wm_params, pool, key, h):
                from worldmodels.imagined_env import imagination_key
                k1, k2 = jax.random.split(imagination_key(key))   # cheap per-step draws (see imagined_env)
                ep = (wm_params, h)
                carry = reset_imagined(dream.reset, ep, pool, k1, n)
                _, batch = collect_imagined(dream.reset, dream.step, ep, agent, agent_state, carry, k2, T)
                agent_state, m = agent._update(agent_state, batch)
                done = (batch.terminated | batch.truncated).astype(jnp.float32)
                m["imagined_return"] = (batch.episode_return * done).sum() / jnp.maximum(done.sum(), 1.0)
                m["imagined_episodes"] = done.sum()
                return agent_state, m
            self._jit_cache["dream_ppo"] = jax.jit(f)
        return self._jit_cache["dream_ppo"]

    def start_pool(self, wm_params, key):
        from worldmodels.imagined_env import encode_starts
        idx = np.asarray(jax.random.randint(key, (self.cfg.loop.start_pool,), 0, self.replay.num_states))
        s = encode_starts(self.wm, wm_params, self.replay, idx)
        # conflicts and carry: per start, for the imagined resets (`obs_to_start`)
        return dict(model_obs(s.latent, s.slots, s.action_mask), slot_conflicts=s.slots.conflicts, carry=s.carry)

    def train_controller(self, st, key, real_batch, iteration: int) -> dict:
        c, lp = self.cfg.controller, self.cfg.loop
        h = horizon_at(self.cfg, iteration)
        metrics: dict[str, float] = {"imagined/horizon": float(h)}
        if c.name == "ppo":
            if not self.model_based:
                st["agent"], m = self.agent.update(st["agent"], real_batch)
                return {**metrics, **{f"controller/{k}": float(v) for k, v in m.items()}}
            kp, key = jax.random.split(key)
            pool = self.start_pool(st["wm"].params, kp)
            n = lp.controller_updates_per_iter
            ratio = 1.0 if c.train_env == "real" else lp.real_ratio  # train_env=real: real batches only
            n_real = int(round(ratio * n)) if real_batch is not None else 0
            rets, ms = [], []
            for u in range(n):
                key, k = jax.random.split(key)
                if u < n_real:
                    st["agent"], m = self.agent.update(st["agent"], real_batch)
                else:
                    st["agent"], m = self._dream_ppo_fn()(st["agent"], st["wm"].params, pool, k, jnp.int32(h))
                    if float(m["imagined_episodes"]) > 0:
                        rets.append(float(m["imagined_return"]))
                ms.append(m)
            if rets:
                metrics["imagined/episode_return"] = float(np.mean(rets))
            for k_ in ("loss", "entropy", "approx_kl"):
                metrics[f"controller/{k_}"] = float(np.mean([float(m[k_]) for m in ms]))
            return metrics
        if c.name == "cmaes":
            if self.model_based:
                kp, key = jax.random.split(key)
                pool = self.start_pool(st["wm"].params, kp)
                fitness = self.agent.make_fitness(self.dream.reset, self.dream.step, (st["wm"].params, jnp.int32(h)), pool)
                step = self.agent.make_train_step(fitness)
                for _ in range(lp.controller_updates_per_iter):
                    key, k = jax.random.split(key)
                    st["agent"], m = step(st["agent"], k)
                metrics["imagined/episode_return"] = float(m["mean_return"])
                return metrics
            return metrics  # model-free CMA-ES is trained in `collect_cmaes_real`
        return metrics

    def cmaes_real_generation(self, st, key) -> tuple[int, list[float]]:
        """Model-free CMA-ES: one generation, fitness = one real episode per candidate."""
        pop, st["agent"] = self.agent.ask(st["agent"])
        score = self._jit_cache.setdefault("cm_scores", jax.jit(self.agent.scores))
        env = self.envs[0]
        returns, steps = [], 0
        seed = int(jax.random.randint(key, (), 0, 2**31 - 1))
        for j in range(self.agent.popsize):
            params = jax.tree_util.tree_map(lambda x: x[j], pop)
            o, _ = env.reset(seed=seed)
            ret, done = 0.0, False
            while not done:
                a = int(jnp.argmax(score(params, o)))
                o, r, te, tr, _ = env.step(a)
                ret += r
                steps += 1
                done = te or tr
            returns.append(ret)
        st["agent"], _ = self.agent.update(st["agent"], (pop, jnp.asarray(returns)))
        return steps, returns

    # ------------------------------------------------------------------ validation
    def run_episode(self, st, graph: str, key) -> dict:
        """The deterministic controller on one real episode of ``graph``: cost reduction,
        return, wall seconds; and (model-based) its imagined return from the same start."""
        env = self._eval_envs.get(graph)
        if env is None:
            env = self._eval_envs[graph] = self._make_env([graph])
        t0 = time.perf_counter()
        o, info = env.reset(seed=0)
        c0 = info["initial_cost_ms"]
        best, ret, done, first = info["cost_ms"], 0.0, False, None
        act = self._actor(st, greedy=True) if self.cfg.controller.name != "random" else None
        rng = np.random.default_rng(0)
        while not done:
            key, k = jax.random.split(key)
            feats = self._featurize(st, [o] * self.B)  # the batch size of collection: no new compile
            if first is None:
                first = feats
            a = int(np.asarray(act(feats, k)[0])[0]) if act else _random_legal(o, rng)
            o, r, te, tr, info = env.step(a)
            ret += r
            best = min(best, info["cost_ms"])
            done = te or tr
        out = {"cost_reduction": 1.0 - info["cost_ms"] / c0, "return": ret, "seconds": time.perf_counter() - t0,
               "initial_cost_ms": c0, "final_cost_ms": info["cost_ms"]}
        if self.model_based and self.cfg.controller.name in LEARNED:
            out["imagined_return"] = self.imagined_return(st, jax.tree_util.tree_map(lambda x: x[0], first), key)
            out["return_gap"] = out["imagined_return"] - ret
        return out

    def imagined_return(self, st, start_obs, key) -> float:
        name = self.cfg.controller.name
        if "dream_eval" not in self._jit_cache:
            agent, dream, H = self.agent, self.dream, self.cfg.env.max_steps

            def f(agent_state, wm_params, obs, key):
                ep = (wm_params, jnp.int32(H))
                s, ts = dream.reset(ep, key, obs)

                def body(c, k):
                    s, o, ret, alive = c
                    if name == "ppo":
                        a = jnp.argmax(agent.distribution(agent_state.params, o)[0]).astype(jnp.int32)
                    else:
                        a = agent._act(agent_state, o, k)
                    s2, ts = dream.step(ep, s, a, k)
                    ret = ret + alive * ts.reward
                    alive = alive * (1.0 - (ts.terminated | ts.truncated))
                    return (s2, ts.observation, ret, alive), None
                (_, _, ret, _), _ = jax.lax.scan(body, (s, ts.observation, 0.0, 1.0), jax.random.split(key, H))
                return ret
            self._jit_cache["dream_eval"] = jax.jit(f)
        return float(self._jit_cache["dream_eval"](st["agent"], st["wm"].params, start_obs, key))

    def validate(self, st, key) -> dict:
        out = {}
        for g in self.graphs + self.heldout:
            key, k = jax.random.split(key)
            out[g] = self.run_episode(st, g, k)
        return out

    # ------------------------------------------------------------------ logging
    def log(self, tag: str, value: float, step: int) -> None:
        if value is not None and np.isfinite(value):
            self.pending.append([tag, int(step), float(value)])

    def flush(self) -> None:
        for tag, step, value in self.pending:
            if step > self.logged_max.get(tag, -1):
                self.logger.scalar(tag, value, step)
                self.logged_max[tag] = step
        self.pending = []
        self.logger.flush()

    # ------------------------------------------------------------------ state / checkpoints
    def _replay_path(self, step: int) -> str:
        return os.path.join(self.ckdir, f"replay_{step}.npz")

    def save(self, st) -> None:
        step = int(st["env_steps"])
        if step in self.ck.all_steps():
            return
        if self.replay is not None:
            self.replay.save(self._replay_path(step))
        tree = {k: v for k, v in st.items() if v is not None}
        self.ck.save(step, tree, extra={"pending": self.pending, "has_replay": self.replay is not None,
                                        "config_hash": config_hash(self.cfg, ("log", "loop"))})
        keep = set(self.ck.all_steps())
        for p in glob.glob(os.path.join(self.ckdir, "replay_*.npz")):
            s = int(os.path.basename(p)[7:-4])
            if s not in keep:
                os.remove(p)

    def restore(self, st, key):
        """Restore the latest checkpoint into ``st`` (building the model from its replay)."""
        from worldmodels.replay import Replay
        step = self.ck.latest_step()
        meta = self.ck.read_meta(step)
        self.ck.check_compatible(meta, step)
        extra = meta.get("extra", {})
        if extra.get("has_replay"):
            self.replay = Replay.load(self._replay_path(step))
        if self.model_based and self.replay is not None:
            st["wm"] = self._init_model(jax.random.fold_in(key, 1))
            st["agent"] = self._init_agent(st, jax.random.fold_in(key, 2))
        like = {k: v for k, v in st.items() if v is not None}
        tree, extra = self.ck.restore(like, step)
        st.update(tree)
        self.pending = [list(x) for x in extra.get("pending", [])]
        return st

    def _init_agent(self, st, key):
        self.agent = self._make_agent()
        if self.cfg.controller.name in ("random", "planner"):
            return {"none": np.zeros(())}
        o, _ = self.envs[0].reset(seed=0)
        obs = jax.tree_util.tree_map(lambda x: x[0], self._featurize(st, [o]))
        return self.agent.init(key, obs)

    # ------------------------------------------------------------------ main
    def run(self) -> dict:
        from worldmodels.checkpoint import Checkpointer
        from worldmodels.logging import RunLogger, progress
        cfg, lp = self.cfg, self.cfg.loop
        t_start = time.time()
        self.ckdir = os.path.join(self.logdir, "checkpoints")
        self.ck = Checkpointer(self.ckdir, config=cfg, keep=lp.keep_checkpoints)
        self._eval_envs: dict = {}
        self.logged_max = {t: max(s for s, _ in v) for t, v in read_scalars(self.logdir).items()}
        self.logger = RunLogger(self.logdir)
        key = jax.random.key(cfg.seed)
        st: dict[str, Any] = {"env_steps": 0, "iteration": 0, "wall": 0.0, "key": jax.random.fold_in(key, 7),
                              "wm": None, "agent": None}
        resumed_from = self.ck.latest_step()
        if resumed_from is not None:
            if not self.model_based:
                st["agent"] = self._init_agent(st, jax.random.fold_in(key, 2))
            st = self.restore(st, key)
            self.echo(f"resumed from checkpoint at real step {st['env_steps']} (iteration {st['iteration']})")
            self.flush()
        elif not self.model_based:
            st["agent"] = self._init_agent(st, jax.random.fold_in(key, 2))
        wall0 = time.time() - float(st["wall"])
        last_eval = (int(st["env_steps"]) // lp.eval_every) * lp.eval_every if st["env_steps"] else -1
        last_ck = int(st["env_steps"])
        bar = progress(total=lp.total_env_steps, desc=f"train ({lp.mode})", enabled=cfg.log.progress, unit="step")
        bar.update(int(st["env_steps"]))
        while int(st["env_steps"]) < lp.total_env_steps:
            it = int(st["iteration"])
            key_it, st["key"] = jax.random.split(st["key"])
            k_col, k_wm, k_ctl, k_val = jax.random.split(key_it, 4)
            step0 = int(st["env_steps"])
            scal: dict[str, float] = {}
            if cfg.controller.name == "cmaes" and not self.model_based:
                n, rets = self.cmaes_real_generation(st, k_col)
                scal["real/episode_return"] = float(np.mean(rets))
                st["env_steps"] = step0 + n
            else:
                warmup = self.model_based and st["wm"] is None
                recs, batch, rets, raw_steps = self.collect(st, k_col, lp.explore_eps if self.model_based else 0.0, random_policy=warmup)
                st["env_steps"] = step0 + self.B * self.T
                if rets:
                    scal["real/episode_return"] = float(np.mean(rets))
                if self.model_based:
                    from worldmodels import fidelity
                    new = episodes_to_replay(recs, self.meta, lp.replay_horizon)
                    step_next = step0 + self.B * self.T
                    due = last_eval < 0 or step_next // lp.eval_every > last_eval // lp.eval_every \
                        or step_next >= lp.total_env_steps
                    if st["wm"] is not None and due:  # fresh episodes, not yet trained on
                        fm = fidelity.evaluate(self.wm, st["wm"].params, new, lp.fidelity_ks, seed=it,
                                               max_windows=lp.fidelity_windows, reference=self.replay)
                        for k_, v in fm.items():
                            if k_ != "windows":
                                scal[f"fidelity/{k_}"] = v
                    self.replay = concat_replays(self.replay, new)
                    if self.replay.num_episodes > lp.replay_episodes:
                        self.replay = self.replay.select_episodes(
                            np.arange(self.replay.num_episodes - lp.replay_episodes, self.replay.num_episodes))
                    if st["wm"] is None:
                        st["wm"] = self._init_model(k_wm)
                        st["agent"] = self._init_agent(st, jax.random.fold_in(k_wm, 1))
                    scal.update(self.train_model(st, k_wm))
                    if batch is not None and (lp.real_ratio > 0 or cfg.controller.train_env == "real"):
                        # the real batch, re-encoded with the updated encoder
                        batch = self._reencode(st, batch, raw_steps)
                scal.update(self.train_controller(st, k_ctl, batch, it))
            st["iteration"] = it + 1
            step = int(st["env_steps"])
            bar.update(step - step0)
            if last_eval < 0 or step // lp.eval_every > last_eval // lp.eval_every or step >= lp.total_env_steps:
                last_eval = step
                val = self.validate(st, k_val)
                for g, m in val.items():
                    pre = "validation" if g in self.graphs else "heldout"
                    scal[f"{pre}/{g}/cost_reduction"] = m["cost_reduction"]
                    scal[f"{pre}/{g}/return"] = m["return"]
                    scal[f"{pre}/{g}/seconds"] = m["seconds"]
                tr = [val[g] for g in self.graphs]
                scal["real/cost_reduction"] = float(np.mean([m["cost_reduction"] for m in tr]))
                if self.heldout:
                    scal["heldout/cost_reduction"] = float(np.mean([val[g]["cost_reduction"] for g in self.heldout]))
                gaps = [m["return_gap"] for m in val.values() if "return_gap" in m]
                if gaps:
                    scal["validation/return_gap"] = float(np.mean(gaps))
                    scal["validation/imagined_return"] = float(np.mean([m["imagined_return"] for m in val.values()]))
                self.echo(f"step {step:6d} it {it + 1:3d}: real cost reduction {scal['real/cost_reduction']:.4f}"
                          + (f", held-out {scal['heldout/cost_reduction']:.4f}" if self.heldout else "")
                          + (f", return gap {scal['validation/return_gap']:+.4f}" if gaps else ""))
            st["wall"] = time.time() - wall0
            scal["time/wall_seconds"] = st["wall"]
            for k_, v in scal.items():
                self.log(k_, v, step)
            if step - last_ck >= lp.checkpoint_every or step >= lp.total_env_steps:
                self.save(st)
                last_ck = step
                self.flush()
        bar.close()
        self.flush()
        summary = self.finish(st, key, resumed_from, t_start)
        self.logger.close()
        self.ck.close()
        return summary

    def train_model(self, st, key) -> dict:
        from worldmodels.world_model import make_train_batch, sample_starts, train_buckets
        rng = np.random.default_rng(int(jax.random.randint(key, (), 0, 2**31 - 1)))
        buckets = self._train_buckets = self._fixed_buckets(train_buckets(self.replay, self.wm.cfg))
        losses = []
        for _ in range(self.cfg.loop.model_updates_per_iter):
            key, k = jax.random.split(key)
            b = make_train_batch(self.replay, sample_starts(self.replay, self.wm.cfg.batch_size, rng),
                                 self.wm.cfg.seq_len, buckets)
            st["wm"], m = self.trainer.step(st["wm"], b, k)
            losses.append({k_: float(v) for k_, v in m.items()})
        return {f"model/{k_}": float(np.mean([m[k_] for m in losses])) for k_ in losses[-1]} if losses else {}

    def _fixed_buckets(self, need):
        """One training capacity for the whole run (one compile): room for 1.5x the largest
        graph in every window state, grown only if the replay ever needs more."""
        from worldmodels.world_model import TrainBuckets, capacity_for
        cur = getattr(self, "_train_buckets", None)
        if cur is None:
            from systems_envs.graph.load import load_graph
            gs = [load_graph(x) for x in self.graphs]
            n = int(1.5 * max(len(x) for x in gs))
            m = int(1.5 * max(sum(len(v.inputs) for v in x.nodes.values()) for x in gs))
            b, t = self.wm.cfg.batch_size, self.wm.cfg.seq_len
            cur = TrainBuckets(capacity_for(n, m, b), capacity_for(n, m, b * t))
        grow = lambda c, nd: type(c)(nodes=(max(c.nodes[0], nd.nodes[0]),), edges=(max(c.edges[0], nd.edges[0]),))  # noqa: E731
        return TrainBuckets(grow(cur.first, need.first), grow(cur.rest, need.rest))

    def _reencode(self, st, batch: Transition, raw_steps: list[list[dict]]) -> Transition:
        """The real PPO batch with its observations re-encoded by the updated encoder (the
        stored log-probabilities and values are kept: PPO's ratio and clipping absorb the
        change)."""
        obs = [self.encode(st["wm"].params, raw) for raw in raw_steps]
        return batch._replace(obs=jax.tree_util.tree_map(lambda *a: np.stack([np.asarray(x) for x in a]), *obs))

    # ------------------------------------------------------------------ end of run
    def finish(self, st, key, resumed_from, t_start) -> dict:
        from systems_envs.graph.load import load_graph
        from systems_envs.rewrite.search import backtracking, greedy
        cfg = self.cfg
        final = self.validate(st, jax.random.fold_in(key, 99))
        rules = self.envs[0].unwrapped.rules
        cm = self.envs[0].unwrapped.cost_model
        per_graph = {}
        for g, m in final.items():
            gr = load_graph(g)
            t0 = time.perf_counter()
            gres = greedy(gr, rules, cm)
            t1 = time.perf_counter()
            bres = backtracking(gr, rules, cm, budget=cfg.loop.search_budget)
            t2 = time.perf_counter()
            per_graph[g] = {**m, "split": "train" if g in self.graphs else "heldout",
                            "greedy_cost_reduction": gres.reduction, "greedy_seconds": t1 - t0,
                            "backtracking_cost_reduction": bres.reduction, "backtracking_seconds": t2 - t1}
        summary = {
            "mode": cfg.loop.mode, "controller": cfg.controller.name, "env": cfg.env.name,
            "graphs": self.graphs, "heldout": self.heldout, "per_graph": per_graph,
            "real_cost_reduction": float(np.mean([per_graph[g]["cost_reduction"] for g in self.graphs])),
            "heldout_cost_reduction": (float(np.mean([per_graph[g]["cost_reduction"] for g in self.heldout]))
                                       if self.heldout else None),
            "real_env_steps": int(st["env_steps"]), "iterations": int(st["iteration"]),
            "wall_seconds": float(st["wall"]), "this_process_seconds": time.time() - t_start,
            "resumed_from_step": resumed_from, "config_hash": config_hash(cfg),
            "replay_transitions": self.replay.num_transitions if self.replay is not None else 0,
        }
        hp = {k: v for k, v in flatten(cfg).items() if not k.startswith("log.")}
        self.logger.hparams(hp, {"real/cost_reduction": summary["real_cost_reduction"]})
        self.logger.write_summary(summary)
        return summary


def _batch(obs) -> int:
    return int(np.shape(obs["action_mask"])[0])


def _random_legal(obs, rng) -> int:
    """Uniform over legal non-stop actions (stop if none)."""
    m = np.asarray(obs["action_mask"]).astype(bool)
    moves = np.flatnonzero(m[:-1])
    return int(rng.choice(moves)) if len(moves) else len(m) - 1


def train(cfg: Config, logdir: str, echo=print) -> dict:
    """Run (or resume) the loop of ``cfg`` in ``logdir``; returns the summary dict."""
    return Loop(cfg, logdir, echo).run()
