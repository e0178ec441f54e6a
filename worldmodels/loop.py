"""The training loop on every environment: real data -> world model -> controller in
imagination -> validation on the real simulator -> checkpoint.

One *iteration* (``mode=model_based``), as `Loop.run` reads:

1. **collect** ``env.num_envs x T`` real steps with the current controller plus epsilon
   exploration (``loop.explore_eps``; uniform random before the world model exists), with
   `worldmodels.collector.Collector`. T = ``controller.ppo.rollout_len``, raised for
   placement to a whole episode of the longest training instance (rounded up to a multiple
   of ``num_minibatches``), so every iteration ends episodes and sees their final reward.
   The environments are reset at the start of every iteration, so an iteration is a pure
   function of the checkpointed state (exact resume);
2. **model**: measure the world model's fidelity on these fresh episodes (not yet trained
   on), add them to the bounded replay (`worldmodels.episodes`), train the model
   ``loop.model_updates_per_iter`` steps; placement (device, memory): refit the outcome
   model (`worldmodels.outcome_online`) on the completed real episodes - it pays the
   imagined final reward;
3. **controller**: ``agent.train_imagined`` (`controllers.agents`): rollouts of the imagined
   env (`worldmodels.dream`) start from encoded replay states and are truncated after the
   MBPO-style horizon ``h(i)`` (linear from ``loop.horizon_min`` to ``loop.imagined_horizon``
   over the iterations ``loop.horizon_schedule``); a fraction ``loop.real_ratio`` of the
   updates uses the latest real batch re-encoded with the updated encoder
   (``controller.train_env=real``: all of them);
4. **validate** every ``loop.eval_every`` real steps: the deterministic controller on one real
   episode of each training and held-out instance (the task's metric, `worldmodels.tasks`),
   and (learned controllers, model-based) its imagined return from the same start;
5. **checkpoint** every ``loop.checkpoint_every`` real steps.

``mode=model_free`` runs the same controller on the real environment only (PPO: the GNN
policy over graph observations; evolution: fitness = one real episode per member; EGRL: one
real episode per mapping and training graph), with the same logging against real
environment steps. An agent that ``reads_graph_obs`` (EGRL) gets graph observations in
model-based mode too, and its validation has no imagined-return check. The loop knows
neither the controller's name nor the environment's: both come from registries
(`controllers.agents.make_agent`, `worldmodels.tasks.make_task`).

Resume: the state (counters, RNG key, world-model and outcome-model params/optimizers,
controller state) is an orbax checkpoint; the replay store is ``replay_<step>.npz`` beside
it (written first). Scalars are buffered and written to TensorBoard only after the
checkpoint that covers them (and kept in its metadata), and a resumed run skips steps
already in the event files, so curves have no duplicated and no lost steps.
"""
from __future__ import annotations

import glob
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from controllers.agents import Imagination, make_agent
from controllers.base import stack_observations
from worldmodels.collector import Collector
from worldmodels.config import Config, config_hash, flatten
from worldmodels.dream import DreamEnv, DreamParams, model_obs, start_entry
from worldmodels.episodes import add_bounded, episodes_to_replay
from worldmodels.tasks import instance_list, make_task
from worldmodels.tb_reader import last_steps

MODES = ("model_based", "model_free")
TRAIN_ENVS = ("real", "imagined")


# ============================================================================ schedules and clocks


def horizon_at(cfg: Config, iteration: int) -> int:
    """MBPO-style schedule: ``horizon_min`` until iteration a, linear to ``imagined_horizon`` at b."""
    lo, hi = cfg.loop.horizon_min, cfg.loop.imagined_horizon
    a, b = cfg.loop.horizon_schedule
    frac = 1.0 if b <= a else min(max((iteration - a) / (b - a), 0.0), 1.0)
    return int(round(lo + frac * (hi - lo)))


class Every:
    """Due at the first check, whenever the real-step count crosses a multiple of ``every``,
    and at the last step (``total``); ``last``: the step it last fired (-1: never)."""

    def __init__(self, every: int, total: int, last: int = -1):
        self.every, self.total, self.last = every, total, last

    def due(self, step: int) -> bool:
        return self.last < 0 or step // self.every > self.last // self.every or step >= self.total

    def fire(self, step: int) -> None:
        self.last = step


class Since:
    """Due once ``every`` real steps have passed since it last fired, and at the last step."""

    def __init__(self, every: int, total: int, last: int):
        self.every, self.total, self.last = every, total, last

    def due(self, step: int) -> bool:
        return step - self.last >= self.every or step >= self.total

    def fire(self, step: int) -> None:
        self.last = step


def steps_per_iteration(cfg: Config, task) -> int:
    """T: real steps of each environment per iteration (see the module docstring)."""
    p = cfg.controller.ppo
    t = p.rollout_len
    if task.kind != "rewrite":
        t = max(t, task.episode_steps)
        t = -(-t // p.num_minibatches) * p.num_minibatches
    return t


def validate_config(cfg: Config) -> None:
    """One-line ValueErrors for bad loop settings (the environment and controller are checked
    by their registries)."""
    c, lp = cfg.controller, cfg.loop
    if lp.mode not in MODES:
        raise ValueError(f"--loop.mode must be one of {MODES}, got {lp.mode!r}")
    if c.train_env not in TRAIN_ENVS:
        raise ValueError(f"--controller.train_env must be 'real' or 'imagined', got {c.train_env!r}")
    if lp.mode == "model_free" and c.name == "planner":
        raise ValueError("--controller.name planner needs a world model: use --loop.mode model_based")
    if not instance_list(cfg.env.graph):
        raise ValueError("--env.graph: give at least one training instance (comma-separated names)")
    if not 0.0 <= lp.real_ratio <= 1.0 or not 0.0 <= lp.explore_eps <= 1.0:
        raise ValueError("--loop.real_ratio and --loop.explore_eps must be in [0, 1]")
    if lp.horizon_min < 1 or lp.imagined_horizon < lp.horizon_min:
        raise ValueError("need 1 <= --loop.horizon_min <= --loop.imagined_horizon")
    n = lp.imagined_envs * c.ppo.rollout_len
    if c.name == "ppo" and (n % c.ppo.num_minibatches or (cfg.env.num_envs * c.ppo.rollout_len) % c.ppo.num_minibatches):
        raise ValueError("--controller.ppo.num_minibatches must divide imagined_envs*rollout_len and num_envs*rollout_len")
    if max(lp.fidelity_ks) > lp.replay_horizon:
        raise ValueError(f"--loop.fidelity_ks {lp.fidelity_ks} exceed --loop.replay_horizon {lp.replay_horizon}")
    if lp.bc_steps < 0 or lp.bc_lr <= 0 or lp.bc_batch < 1:
        raise ValueError(f"--loop.bc_steps must be >= 0, --loop.bc_lr > 0 and --loop.bc_batch >= 1, "
                         f"got {lp.bc_steps}, {lp.bc_lr}, {lp.bc_batch}")
    if lp.eval_every < 1 or lp.checkpoint_every < 1 or lp.total_env_steps < 1:
        raise ValueError("--loop.total_env_steps, --loop.eval_every and --loop.checkpoint_every must be >= 1")


# ============================================================================ the loop


class Loop:
    """The loop of one run (see the module docstring). ``run()`` resumes from the last
    checkpoint in ``logdir/checkpoints`` if there is one and returns the summary dict."""

    def __init__(self, cfg: Config, logdir: str, echo=print):
        validate_config(cfg)
        self.cfg, self.logdir, self.echo = cfg, logdir, echo
        self.model_based = cfg.loop.mode == "model_based"
        self.task = task = make_task(cfg)
        self.graphs, self.heldout = task.train, task.heldout
        self.B, self.T = cfg.env.num_envs, steps_per_iteration(cfg, task)
        self.collector = Collector(task, self.B)
        self.envs = self.collector.envs
        self.A, self.num_rules = task.num_slots, task.num_rules
        self.meta = {"env_id": cfg.env.name, "graphs": self.graphs, "kind": task.kind, "seed": cfg.seed,
                     "num_rules": self.num_rules, "env_kwargs": task.env_kwargs}
        self.wm = self.trainer = self.dream = self.outcome = None
        self.dream_steps = task.episode_steps
        if self.model_based:
            self._build_model()
        self.agent = make_agent(cfg.controller.name, cfg.controller, self.model_based,
                                num_rules=self.num_rules, dream=self.dream, task=task)
        self.replay = None
        self.pending: list[list] = []
        self.logged_max: dict[str, int] = {}
        self._jit_cache: dict = {}

    # ------------------------------------------------------------------ model pieces
    def _build_model(self) -> None:
        from worldmodels.world_model import Trainer, WorldModel
        cfg = self.cfg
        self.wm = wm = WorldModel.create(cfg.model, self.task.kind, self.A, self.num_rules)
        self.trainer = Trainer(wm)
        layout = self.task.outcome_layout() if cfg.loop.outcome.enabled else None
        if layout is not None:
            from worldmodels.outcome import OutcomeConfig
            from worldmodels.outcome_online import OnlineOutcome
            o = cfg.loop.outcome
            ocfg = OutcomeConfig(width=o.width, members=o.members, lr=o.lr, batch_size=o.batch_size)
            self.outcome = OnlineOutcome(layout, ocfg, *self.task.capacity())
        self.dream = DreamEnv(wm, max_steps=self.dream_steps, outcome=None if self.outcome is None else self.outcome.model)
        self._encode = jax.jit(lambda p, g, r, n, cr: wm.encode(p, g, r, n, r.shape[0], cr))

    def _init_model(self, key):
        """World-model train state built on the current replay."""
        return self.trainer.init(self.wm.init(key, self.replay))

    def _init_outcome(self, key):
        from worldmodels.outcome_online import final_placements
        data = final_placements(self.replay, *self.task.capacity())
        if data.placed is None:  # no valid finished episode yet: build on a replay state
            from worldmodels.outcome import PlacedGraph, pad_observation
            pg = pad_observation(self.replay.state_obs(0), *self.task.capacity())
            example = PlacedGraph(*(np.asarray(x)[None] for x in pg))
        else:
            example = jax.tree.map(lambda x: x[:1], data.placed)
        return self.outcome.init(key, example, data.reward)

    def encode(self, wm_params, graph_obs: list[dict]) -> dict:
        """Model observations [B, ...] of graph observations (one fixed capacity)."""
        from encoders.graphs import Buckets, batch_observations
        from controllers.base import next_pow2
        n_cap, m_cap = self.task.capacity()
        k = len(graph_obs)
        b = batch_observations(graph_obs, Buckets(nodes=(next_pow2(k * n_cap + 1),), edges=(next_pow2(k * m_cap),)),
                               n_graph=k + 1)
        if b.candidate_rule is None:
            rule, nodes, cr = np.zeros((k, 0), np.int32), np.zeros((k, 0, 0), np.int32), np.zeros((k, 0), np.float32)
        else:
            rule, nodes, cr = b.candidate_rule, b.candidate_nodes, b.candidate_reward
        lat, slots = self._encode(wm_params, b.graphs, rule, nodes, cr)
        return model_obs(lat, slots, jnp.asarray(b.action_mask))

    def featurize(self, st, graph_obs: list[dict]):
        """What the agent reads: model observations (model-based, unless the agent reads graph
        observations) or stacked graph observations."""
        if self.model_based and not self.agent.reads_graph_obs:
            return self.encode(st["wm"].params, graph_obs)
        return stack_observations(graph_obs)

    def dream_params(self, st, horizon: int) -> DreamParams:
        return DreamParams(st["wm"].params, jnp.int32(horizon),
                           None if st.get("outcome") is None else st["outcome"]["params"])

    def _init_agent(self, st, key):
        o, _ = self.envs[0].reset(seed=0)
        obs = jax.tree_util.tree_map(lambda x: x[0], self.featurize(st, [self.task.graph_obs(o)]))
        state = self.agent.init(key, obs)
        if self.cfg.loop.bc_steps > 0:   # warm start: clone the env's demonstrations (no simulator call)
            raw, actions = self.task.demonstrations()
            demo = self.featurize(st, [self.task.graph_obs(r) for r in raw])
            state, m = self.agent.clone(state, demo, np.asarray(actions, np.int32), self.cfg.loop.bc_steps,
                                        self.cfg.loop.bc_lr, self.cfg.loop.bc_batch, self.cfg.seed)
            self.echo(f"behaviour cloning: {len(actions)} demonstration steps, {self.cfg.loop.bc_steps} Adam steps, "
                      f"loss {m['bc/loss']:.4f}, accuracy {m['bc/accuracy']:.3f}")
        return state

    # ------------------------------------------------------------------ 1. collect
    def collect(self, st, key):
        model = self.dream_params(st, self.cfg.controller.planner.horizon) if st["wm"] is not None else None
        if self.model_based and st["wm"] is None:   # warm-up: no model to read observations yet
            return self.collector.collect(key, self.T)
        state = st["agent"]
        return self.collector.collect(
            key, self.T, act=lambda obs, k: self.agent.act(state, obs, k, False, model),
            featurize=lambda g: self.featurize(st, g), values=lambda obs: self.agent.values(state, obs),
            explore_eps=self.cfg.loop.explore_eps if self.model_based else 0.0,
            want_batch=self.agent.uses_real_batch)

    # ------------------------------------------------------------------ 2. model
    def update_model(self, st, data, key, fidelity_due: bool) -> dict:
        from worldmodels import fidelity
        lp, scal = self.cfg.loop, {}
        new = episodes_to_replay(data.records, self.meta, lp.replay_horizon)
        if st["wm"] is not None and fidelity_due:  # fresh episodes, not yet trained on
            outcome = None if st.get("outcome") is None else (self.outcome.model, st["outcome"]["params"])
            fm = fidelity.evaluate(self.wm, st["wm"].params, new, lp.fidelity_ks, seed=int(st["iteration"]),
                                   max_windows=lp.fidelity_windows, reference=self.replay, outcome=outcome)
            scal.update({f"fidelity/{k}": v for k, v in fm.items() if k != "windows"})
        self.replay = add_bounded(self.replay, new, lp.replay_episodes)
        if st["wm"] is None:
            st["wm"] = self._init_model(key)
            st["agent"] = self._init_agent(st, jax.random.fold_in(key, 1))
        scal.update(self.train_model(st, key))
        if self.outcome is not None:
            from worldmodels.outcome_online import final_placements
            if st.get("outcome") is None:
                st["outcome"] = self._init_outcome(jax.random.fold_in(key, 2))
            rng = np.random.default_rng(int(jax.random.randint(jax.random.fold_in(key, 3), (), 0, 2**31 - 1)))
            st["outcome"], m = self.outcome.train(st["outcome"], final_placements(self.replay, *self.task.capacity()),
                                                  lp.outcome.updates_per_iter, rng)
            scal.update(m)
        return scal

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
            losses.append(m)
        return {f"model/{k_}": float(np.mean([float(m[k_]) for m in losses])) for k_ in losses[-1]} if losses else {}

    def _fixed_buckets(self, need):
        """One training capacity for the whole run (one compile): room for the largest
        training instance (rewriting: 1.5x, graphs grow) in every window state, grown only
        if the replay ever needs more."""
        from worldmodels.world_model import TrainBuckets, capacity_for
        cur = getattr(self, "_train_buckets", None)
        if cur is None:
            n, m = self.task.train_sizes()
            b, t = self.wm.cfg.batch_size, self.wm.cfg.seq_len
            cur = TrainBuckets(capacity_for(n, m, b), capacity_for(n, m, b * t))
        grow = lambda c, nd: type(c)(nodes=(max(c.nodes[0], nd.nodes[0]),), edges=(max(c.edges[0], nd.edges[0]),))  # noqa: E731
        return TrainBuckets(grow(cur.first, need.first), grow(cur.rest, need.rest))

    def start_pool(self, wm_params, key) -> dict:
        """``loop.start_pool`` encoded replay states (`worldmodels.dream.start_entry`, leading
        dim [S]); with an outcome model each carries its placed graph at the task's capacity."""
        from worldmodels.imagined_env import encode_starts
        idx = np.asarray(jax.random.randint(key, (self.cfg.loop.start_pool,), 0, self.replay.num_states))
        s = encode_starts(self.wm, wm_params, self.replay, idx, placed=self.outcome is not None)
        if s.placed is not None:
            s = s._replace(placed=_repad(s.placed, *self.task.capacity()))
        return start_entry(s)

    def _reencode(self, st, batch, graph_obs: list[list[dict]]):
        """The real PPO batch with its observations re-encoded by the updated encoder (the
        stored log-probabilities and values are kept: PPO's ratio and clipping absorb the
        change)."""
        obs = [self.encode(st["wm"].params, g) for g in graph_obs]
        return batch._replace(obs=jax.tree_util.tree_map(lambda *a: np.stack([np.asarray(x) for x in a]), *obs))

    # ------------------------------------------------------------------ 3. controller
    def update_agent(self, st, data, key, iteration: int) -> dict:
        c, lp = self.cfg.controller, self.cfg.loop
        h = horizon_at(self.cfg, iteration)
        scal = {"imagined/horizon": float(h)}
        if not self.agent.learns:
            return scal
        if not self.model_based:
            st["agent"], m = self.agent.train_real(st["agent"], data.batch, key)
            return {**scal, **m}
        batch = data.batch
        if batch is not None and (lp.real_ratio > 0 or c.train_env == "real"):
            batch = self._reencode(st, batch, data.graph_obs)
        kp, key = jax.random.split(key)
        imagination = Imagination(self.dream, self.dream_params(st, h), self.start_pool(st["wm"].params, kp),
                                  lp.imagined_envs, lp.controller_updates_per_iter)
        if self.agent.reads_measured:
            from worldmodels.outcome_online import measured_mappings
            imagination = imagination._replace(measured=measured_mappings(self.replay))
        ratio = 1.0 if c.train_env == "real" else lp.real_ratio
        n_real = int(round(ratio * lp.controller_updates_per_iter)) if batch is not None else 0
        st["agent"], m = self.agent.train_imagined(st["agent"], imagination, key, batch, n_real)
        return {**scal, **m}

    # ------------------------------------------------------------------ 4. validate
    def run_episode(self, st, instance: str, key) -> dict:
        """The deterministic controller on one real episode of ``instance``: the task's
        metric, return, wall seconds; and (model-based, learned) its imagined return from
        the same start and the gap."""
        model = self.dream_params(st, self.cfg.controller.planner.horizon) if self.model_based else None
        state = st["agent"]
        out = self.collector.episode(instance, key, lambda obs, k: self.agent.act(state, obs, k, True, model),
                                     lambda g: self.featurize(st, g), self.B)
        first, first_obs = out.pop("first"), out.pop("first_obs")
        if self.model_based and self.agent.learns and not self.agent.reads_graph_obs:
            start = jax.tree_util.tree_map(lambda x: x[0], first)
            if self.outcome is not None:
                start = {**start, "placed": _placed_graph(first_obs, *self.task.capacity())}
            out["imagined_return"] = self.imagined_return(st, start, key)
            out["return_gap"] = out["imagined_return"] - out["return"]
        return out

    def imagined_return(self, st, start_obs, key) -> float:
        if "dream_eval" not in self._jit_cache:
            agent, dream, H = self.agent, self.dream, self.dream_steps

            def f(agent_state, params, obs, key):
                s, ts = dream.reset(params, key, obs)

                def body(c, k):
                    s, o, ret, alive = c
                    a = agent.policy(agent_state, o, k, True, params)[0]
                    s2, ts = dream.step(params, s, a, k)
                    ret = ret + alive * ts.reward
                    alive = alive * (1.0 - (ts.terminated | ts.truncated))
                    return (s2, ts.observation, ret, alive), None
                (_, _, ret, _), _ = jax.lax.scan(body, (s, ts.observation, 0.0, 1.0), jax.random.split(key, H))
                return ret
            self._jit_cache["dream_eval"] = jax.jit(f)
        return float(self._jit_cache["dream_eval"](st["agent"], self.dream_params(st, self.dream_steps), start_obs, key))

    def validate(self, st, key) -> dict:
        out = {}
        for g in self.graphs + self.heldout:
            key, k = jax.random.split(key)
            out[g] = self.run_episode(st, g, k)
        return out

    def validation_scalars(self, val: dict) -> dict:
        metric, scal = self.task.metric, {}
        for g, m in val.items():
            pre = "validation" if g in self.graphs else "heldout"
            for k in (metric, "return", "seconds"):
                scal[f"{pre}/{g}/{k}"] = m[k]
        scal[f"real/{metric}"] = scal["real/score"] = float(np.mean([val[g][metric] for g in self.graphs]))
        if self.heldout:
            scal[f"heldout/{metric}"] = scal["heldout/score"] = float(np.mean([val[g][metric] for g in self.heldout]))
        gaps = [m["return_gap"] for m in val.values() if "return_gap" in m]
        if gaps:
            scal["validation/return_gap"] = float(np.mean(gaps))
            scal["validation/imagined_return"] = float(np.mean([m["imagined_return"] for m in val.values()]))
        return scal

    # ------------------------------------------------------------------ 5. checkpoint and logging
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
                                        "has_outcome": st.get("outcome") is not None,
                                        "config_hash": config_hash(self.cfg, ("log", "loop"))})
        keep = set(self.ck.all_steps())
        for p in glob.glob(os.path.join(self.ckdir, "replay_*.npz")):
            if int(os.path.basename(p)[7:-4]) not in keep:
                os.remove(p)

    def restore(self, st, key):
        """Restore the latest checkpoint into ``st`` (building the models from its replay)."""
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
            if extra.get("has_outcome"):
                st["outcome"] = self._init_outcome(jax.random.fold_in(key, 3))
        like = {k: v for k, v in st.items() if v is not None}
        tree, extra = self.ck.restore(like, step)
        st.update(tree)
        self.pending = [list(x) for x in extra.get("pending", [])]
        return st

    # ------------------------------------------------------------------ main
    def run(self) -> dict:
        from worldmodels.checkpoint import Checkpointer
        from worldmodels.logging import RunLogger, progress
        cfg, lp = self.cfg, self.cfg.loop
        t_start = time.time()
        self.ckdir = os.path.join(self.logdir, "checkpoints")
        self.ck = Checkpointer(self.ckdir, config=cfg, keep=lp.keep_checkpoints)
        self.logged_max = last_steps(self.logdir)
        self.logger = RunLogger(self.logdir)
        key = jax.random.key(cfg.seed)
        st: dict[str, Any] = {"env_steps": 0, "iteration": 0, "wall": 0.0, "key": jax.random.fold_in(key, 7),
                              "wm": None, "agent": None, "outcome": None}
        if not self.model_based:
            st["agent"] = self._init_agent(st, jax.random.fold_in(key, 2))
        resumed_from = self.ck.latest_step()
        if resumed_from is not None:
            st = self.restore(st, key)
            self.echo(f"resumed from checkpoint at real step {st['env_steps']} (iteration {st['iteration']})")
            self.flush()
        step = int(st["env_steps"])
        wall0 = time.time() - float(st["wall"])
        evaluate = Every(lp.eval_every, lp.total_env_steps, (step // lp.eval_every) * lp.eval_every if step else -1)
        checkpoint = Since(lp.checkpoint_every, lp.total_env_steps, step)
        bar = progress(total=lp.total_env_steps, desc=f"train ({lp.mode})", enabled=cfg.log.progress, unit="step")
        bar.update(step)
        while step < lp.total_env_steps:
            it = int(st["iteration"])
            key_it, st["key"] = jax.random.split(st["key"])
            k_col, k_wm, k_ctl, k_val = jax.random.split(key_it, 4)
            scal: dict[str, float] = {}
            if self.agent.trains_on_real_episodes and not self.model_based:   # evolution on real episodes
                st["agent"], m, n, rets = self.agent.train_on_episodes(st["agent"], self.collector.episode_return, k_col)
                scal.update(m)
                scal["real/episode_return"] = float(np.mean(rets))
            else:
                data = self.collect(st, k_col)                                           # 1. collect
                n = data.steps
                if data.returns:
                    scal["real/episode_return"] = float(np.mean(data.returns))
                if self.model_based:                                                     # 2. model
                    scal.update(self.update_model(st, data, k_wm, evaluate.due(step + n)))
                scal.update(self.update_agent(st, data, k_ctl, it))                      # 3. controller
            st["env_steps"] = step = step + n
            st["iteration"] = it + 1
            bar.update(n)
            if evaluate.due(step):                                                       # 4. validate
                evaluate.fire(step)
                v = self.validation_scalars(self.validate(st, k_val))
                scal.update(v)
                self.echo(self._progress_line(step, it + 1, v))
            st["wall"] = time.time() - wall0
            scal["time/wall_seconds"] = st["wall"]
            for k_, v_ in scal.items():
                self.log(k_, v_, step)
            if checkpoint.due(step):                                                     # 5. checkpoint
                checkpoint.fire(step)
                self.save(st)
                self.flush()
        bar.close()
        self.flush()
        summary = self.finish(st, key, resumed_from, t_start)
        self.logger.close()
        self.ck.close()
        return summary

    def _progress_line(self, step: int, it: int, v: dict) -> str:
        m = self.task.metric
        return (f"step {step:6d} it {it:3d}: real {m} {v[f'real/{m}']:.4f}"
                + (f", held-out {v[f'heldout/{m}']:.4f}" if self.heldout else "")
                + (f", return gap {v['validation/return_gap']:+.4f}" if "validation/return_gap" in v else ""))

    # ------------------------------------------------------------------ end of run
    def finish(self, st, key, resumed_from, t_start) -> dict:
        cfg, metric = self.cfg, self.task.metric
        final = self.validate(st, jax.random.fold_in(key, 99))
        per_graph, names = {}, []
        for g, m in final.items():
            row = {**m, "split": "train" if g in self.graphs else "heldout"}
            base = self.task.baselines(g)
            names = list(base)
            for b, r in base.items():
                row.update({f"{b}_{k}": v for k, v in r.items()})
            best = max(base, key=lambda b: base[b][metric])
            row.update({"best_baseline": best, f"best_baseline_{metric}": base[best][metric],
                        "at_least_best_baseline": bool(m[metric] >= base[best][metric] - 1e-12)})
            per_graph[g] = row
        mean = lambda gs: float(np.mean([per_graph[g][metric] for g in gs])) if gs else None  # noqa: E731
        summary = {
            "mode": cfg.loop.mode, "controller": cfg.controller.name, "env": cfg.env.name, "metric": metric,
            "baselines": names,
            "graphs": self.graphs, "heldout": self.heldout, "per_graph": per_graph,
            f"real_{metric}": mean(self.graphs), f"heldout_{metric}": mean(self.heldout),
            "real_score": mean(self.graphs), "heldout_score": mean(self.heldout),
            "heldout_at_least_best_baseline": sum(per_graph[g]["at_least_best_baseline"] for g in self.heldout),
            "real_env_steps": int(st["env_steps"]), "iterations": int(st["iteration"]),
            "wall_seconds": float(st["wall"]), "this_process_seconds": time.time() - t_start,
            "resumed_from_step": resumed_from, "config_hash": config_hash(cfg),
            "replay_transitions": self.replay.num_transitions if self.replay is not None else 0,
        }
        hp = {k: v for k, v in flatten(cfg).items() if not k.startswith("log.")}
        self.logger.hparams(hp, {f"real/{metric}": summary["real_score"]})
        self.logger.write_summary(summary)
        return summary


def _placed_graph(graph_obs: dict, node_cap: int, edge_cap: int):
    """The `worldmodels.outcome.PlacedGraph` of a padded graph observation."""
    from worldmodels.outcome import PlacedGraph, pad_observation
    n, e = int(graph_obs["n_node"][0]), int(graph_obs["n_edge"][0])
    trimmed = {"node_features": graph_obs["node_features"][:n], "edge_features": graph_obs["edge_features"][:e],
               "senders": graph_obs["senders"][:e], "receivers": graph_obs["receivers"][:e]}
    return PlacedGraph(*(jnp.asarray(x) for x in pad_observation(trimmed, node_cap, edge_cap)))


def _repad(pg, node_cap: int, edge_cap: int):
    """`worldmodels.outcome.PlacedGraph` [S, n, ...] padded to ``node_cap`` nodes / ``edge_cap``
    edges (new padding edges join the last node, a padding node)."""
    n, e = pg.nodes.shape[-2], pg.senders.shape[-1]
    pad = lambda x, k, axis, v=0: jnp.concatenate(  # noqa: E731
        [x, jnp.full(x.shape[:axis] + (k,) + x.shape[axis + 1:], v, x.dtype)], axis) if k > 0 else x
    return pg._replace(nodes=pad(pg.nodes, node_cap - n, 1), edges=pad(pg.edges, edge_cap - e, 1),
                       senders=pad(pg.senders, edge_cap - e, 1, node_cap - 1),
                       receivers=pad(pg.receivers, edge_cap - e, 1, node_cap - 1))


def train(cfg: Config, logdir: str, echo=print) -> dict:
    """Run (or resume) the loop of ``cfg`` in ``logdir``; returns the summary dict."""
    return Loop(cfg, logdir, echo).run()
