"""A controller trained by ``python -m experiments.train``, loaded from its run directory and
applied to any graph: the policy alone, the policy guiding a beam search on the real
simulator, or MCTS in the learned world model.

    run = load_run("runs/x", "resnet50")                 # one-line CheckpointError if unusable
    result = run.optimise("policy")                      # or "beam" (width=K), "mcts" (simulations=N)

What a run directory must hold: ``config.json`` (the resolved config), ``checkpoints/``
(orbax; the latest step is used) and, for a model-based run, the ``replay_<step>.npz``
beside it (the world model's template is built from it, as a resume does);
``rules.json`` (written by ``experiments.train``: the rule names in id order) if present is
compared with the rules of this code. Only PPO controllers are applied (``cmaes``,
``planner``, ``random`` runs are refused with a one-line error).

Adapting to the graph: the policy and the world model score each candidate slot with shared
weights and read graphs of any size through padding, so a graph larger than the training
graphs gets an environment whose node/edge capacity is bucketed to it (the next power of two
of twice its size, as training does, or the run's ``env.node_capacity`` if larger); a
chained episode keeps the previous episode's capacity while the graph fills at most three
quarters of it (so nothing is compiled again for it). The
number of candidate slots ``A`` and the episode length stay the run's
(``env.max_candidates``, ``env.max_steps``), because the observation's global features are
relative to them. A run trained before rules were added to this code is applied with the
rules it knew, in its own id order (:func:`rules_for_run`; the new rules are not offered);
a run trained with a rule this code no longer has, or with observation features of another
width (a checkpoint of an older code version), is refused with one line naming the
difference, never a shape traceback.

Candidate slots created by a rewrite, per search:

- policy alone and beam search step the real simulator, so new candidates are offered as
  soon as a rewrite creates them;
- MCTS searches in the world model, whose imagined environment carries only the root
  state's candidate slots (`worldmodels.imagined_env`: it does not invent graphs, so it
  cannot invent new candidate locations; the mask head predicts which carried slots stay
  legal). A candidate that a rewrite creates therefore exists nowhere in the tree. The
  search is re-rooted at the real state after ``replan`` real steps (default 1, i.e. every
  step), which brings the new candidates in; ``replan`` > 1 plays that many steps of the
  tree's best path open-loop, over the root's slots only. `experiments.bench_plan` measures
  the effect of this choice (``--replan``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from controllers.base import next_pow2
from systems_envs.rewrite.search import SearchResult
from worldmodels.checkpoint import CheckpointError

SEARCHES = ("policy", "beam", "mcts")
RULES_FILE = "rules.json"


# ----------------------------------------------------------------------------- rule set identity


def rule_names(rules) -> list[str]:
    return [r.name for r in rules]


def rules_fingerprint(names: list[str]) -> str:
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]


def write_rules(run_dir: str, rules) -> str:
    """Record the rule set a run trains with (names in id order, fingerprint) as
    ``run_dir/rules.json``; returns the path."""
    names = rule_names(rules)
    path = os.path.join(run_dir, RULES_FILE)
    with open(path + ".tmp", "w") as f:
        json.dump({"num_rules": len(names), "fingerprint": rules_fingerprint(names), "names": names}, f)
    os.replace(path + ".tmp", path)
    return path


def rules_for_run(run_dir: str, rules) -> list:
    """The rules to apply a run with: ``rules`` in the order the run recorded in
    ``run_dir/rules.json`` (a rule's id is its position, and the networks embed the id).

    Rules of this code that the run never saw (added since) are left out: the trained
    optimiser applies the rules it was trained with. A rule the run was trained with that
    this code no longer has is a CheckpointError naming it. No record: ``rules`` as they are.
    """
    path = os.path.join(run_dir, RULES_FILE)
    if not os.path.exists(path):
        return list(rules)
    try:
        with open(path) as f:
            saved = json.load(f)
        old = [str(n) for n in saved["names"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: unreadable ({type(e).__name__})") from None
    by_name = {r.name: r for r in rules}
    gone = [n for n in old if n not in by_name]
    if gone or len(set(old)) != len(old):
        raise CheckpointError(
            f"run {run_dir} was trained with another rule set ({len(old)} rules, now {len(rules)}; "
            f"only in the run: {gone[:3] or 'none'}{', repeated names' if len(set(old)) != len(old) else ''})")
    return [by_name[n] for n in old]


# ----------------------------------------------------------------------------- the loaded run


@dataclasses.dataclass
class TrainedRun:
    """A loaded run applied to one graph (see the module docstring). ``env`` is the real
    environment on that graph (`GraphRewriteEnv`, unwrapped); ``agent`` the PPO (model-free:
    over graph observations) or latent PPO (model-based: over the world model's encoding)."""

    run_dir: str
    cfg: Any
    step: int
    env: Any
    cost: str
    agent: Any
    agent_state: Any
    wm: Any = None
    wm_params: Any = None
    jitted: dict = dataclasses.field(default_factory=dict)   # compiled functions, shared by runs of one checkpoint

    @property
    def model_based(self) -> bool:
        return self.wm is not None

    # ------------------------------------------------------------------ observations
    def encode(self, observations: list[dict]) -> dict:
        """Model observations [B, ...] (latent, slots, mask, slot conflicts) of real ones."""
        from encoders.graphs import Buckets, batch_observations
        from worldmodels.dream import model_obs

        k = len(observations)
        n_cap, e_cap = (np.shape(observations[0][x])[0] for x in ("node_features", "senders"))  # the env's capacity
        buckets = Buckets(nodes=(next_pow2(k * n_cap + 1),), edges=(next_pow2(k * e_cap),))
        b = batch_observations(observations, buckets, n_graph=k + 1)
        lat, slots = self.jitted["encode"](self.wm_params, b.graphs, b.candidate_rule, b.candidate_nodes,
                                           b.candidate_reward)
        return dict(model_obs(lat, slots, jnp.asarray(b.action_mask)), slot_conflicts=slots.conflicts)

    def policy_logp(self, observations: list[dict], batch: int | None = None) -> np.ndarray:
        """float [len, A+1]: the policy's masked log-probabilities of real observations; the
        batch is padded to ``batch`` (one compile per size)."""
        n = len(observations)
        batch = max(batch or n, n)
        obs = list(observations) + [observations[0]] * (batch - n)
        feats = self.encode(obs) if self.model_based else {
            k: np.stack([np.asarray(o[k]) for o in obs]) for k in obs[0]}
        return np.asarray(self.jitted["logp"](self.agent_state.params, feats))[:n]

    def __post_init__(self):
        agent, wm = self.agent, self.wm
        if "logp" not in self.jitted:
            self.jitted["logp"] = jax.jit(jax.vmap(lambda p, o: agent.distribution(p, o)[0], in_axes=(None, 0)))
        if wm is not None and "encode" not in self.jitted:
            self.jitted["encode"] = jax.jit(lambda p, g, r, n, cr: wm.encode(p, g, r, n, r.shape[0], cr))

    # ------------------------------------------------------------------ searches
    def optimise(self, search: str = "policy", width: int = 4, expand: int | None = None,
                 simulations: int = 32, replan: int = 1, episodes: int = 1, seed: int = 0,
                 progress: Callable[[str], None] | None = None) -> SearchResult:
        """Optimise the environment's graph with ``search`` (`SEARCHES`): ``policy`` (beam of
        width 1), ``beam`` (``width`` beams, each expanded by its ``expand`` most probable
        actions, default ``width``), ``mcts`` (``simulations`` per real step, re-rooted every
        ``replan`` real steps). An episode lasts at most the run's ``env.max_steps`` rewrites;
        up to ``episodes`` episodes are chained, each starting from the previous one's best
        graph, while an episode lowers the cost. Returns the cheapest graph seen (`SearchResult`;
        ``rewrites``, ``seconds`` and ``expanded`` summed over the episodes)."""
        if search not in SEARCHES:
            raise ValueError(f"search must be one of {SEARCHES}, got {search!r}")
        if episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {episodes}")
        total, env = None, self.env
        for r in range(episodes):
            if r:   # the next episode starts from this one's best graph (at least the same capacity)
                env = _env_for(self.cfg, total.graph, self.cost, env.rules, env.max_nodes, env.max_edges)
            res = self._episode(env, search, width, expand, simulations, replan, seed, progress)
            improved = res.cost_after < res.cost_before
            if total is None:
                total = res
            else:
                total = SearchResult(res.graph, total.cost_before, res.cost_after, total.rewrites + res.rewrites,
                                     total.seconds + res.seconds, total.expanded + res.expanded)
            if not improved:
                break
        return total

    def _episode(self, env, search, width, expand, simulations, replan, seed, progress) -> SearchResult:
        """One episode of ``search`` on ``env`` (reset here)."""
        from controllers.beam import beam_search

        obs, _ = env.reset(seed=seed)
        if search == "mcts":
            return self._mcts(env, obs, simulations, replan, seed, progress)
        if search == "policy":
            width, expand = 1, 1
        expand = width if expand is None else expand
        return beam_search(env, obs, lambda os_: self.policy_logp(os_, batch=width), width=width,
                           expand=expand, progress=progress)

    def mcts(self, simulations: int, method: str = "muzero"):
        """The `controllers.mcts.MCTS` over this run's world model and policy (model-based runs)."""
        if not self.model_based:
            raise ValueError(f"run {self.run_dir} is model-free: MCTS needs a world model (a model-based run)")
        from controllers.mcts import MCTS
        from worldmodels.dream import DreamEnv

        key = ("mcts", simulations, method)
        cache = self.jitted
        if key not in cache:
            dream = DreamEnv(self.wm, max_steps=self.cfg.env.max_steps)
            net = self.agent.net
            cache[key] = MCTS(dream.reset, dream.step, lambda p, o: net.apply(p, o),
                              num_simulations=simulations, method=method)
        return cache[key]

    def _mcts_search_fn(self, simulations: int, replan: int):
        """Jitted: (MCTSState, model observation [1], key) -> the first ``replan`` actions of
        the best path and their validity ([1, replan] each)."""
        mcts = self.mcts(simulations)
        key = ("mcts_search", simulations, replan)
        if key not in self.jitted:
            self.jitted[key] = jax.jit(lambda st, o, k: _search_pv(mcts, st, o, k, replan))
        return self.jitted[key]

    def warm_up(self, search: str, width: int = 1, simulations: int = 32, replan: int = 1) -> float:
        """Compile what ``optimise(search, ...)`` runs (for this graph's capacity) without
        stepping the environment; returns the seconds it took."""
        from controllers.mcts import MCTSState

        t0 = time.perf_counter()
        obs, _ = self.env.reset(seed=0)
        if search == "mcts":
            fn = self._mcts_search_fn(simulations, replan)
            st = MCTSState((self.wm_params, jnp.int32(self.cfg.env.max_steps)), self.agent_state.params)
            jax.block_until_ready(fn(st, self.encode([obs]), jax.random.key(0)))
        else:
            self.policy_logp([obs], batch=1 if search == "policy" else width)
        return time.perf_counter() - t0

    def _mcts(self, env, obs, simulations, replan, seed, progress) -> SearchResult:
        from controllers.beam import RealPath
        from controllers.mcts import MCTSState

        if replan < 1:
            raise ValueError(f"replan must be >= 1, got {replan}")
        search = self._mcts_search_fn(simulations, replan)
        path = RealPath(env)
        done, key = False, jax.random.key(seed)
        while not done:
            key, k = jax.random.split(key)
            model = self.encode([obs])
            left = jnp.int32(self.cfg.env.max_steps - path.steps)   # the real episode's steps left
            actions, valid = search(MCTSState((self.wm_params, left), self.agent_state.params), model, k)
            actions, valid = np.asarray(actions)[0], np.asarray(valid)[0]
            for i, (a, ok) in enumerate(zip(actions, valid)):
                a = int(a)
                if not ok or not obs["action_mask"][a] or a == env.max_candidates:
                    done = done or i == 0      # the tree's best first move is stop
                    break
                obs, ended = path.step(a)
                if ended:
                    done = True
                    break
            if progress:
                progress(f"mcts step {path.steps}: cost {env.index.cost:.4f} ms, best {path.best[0]:.4f} ms")
        return path.result()


def _search_pv(mcts, state, model_obs, key, length):
    """One MCTS search from a batch of one model observation: the first ``length`` actions
    of the best path and their validity ([1, length] each); the first is the search's
    action."""
    from controllers.mcts import principal_variation

    action, _, _, tree = mcts._search(state, model_obs, key)
    acts, ok = principal_variation(tree, length, mcts.select)
    return acts.at[:, 0].set(action), ok.at[:, 0].set(True)


# ----------------------------------------------------------------------------- loading


def _env_for(cfg, graph, cost: str, rules, min_nodes: int = 0, min_edges: int = 0):
    """The real environment of ``graph`` with the run's slots and episode length, and a node /
    edge capacity bucketed to the graph (see the module docstring)."""
    from systems_envs.graph.cost import make_cost_model
    from systems_envs.graph.ir import Graph
    from systems_envs.graph.load import load_graph
    from systems_envs.rewrite.candidates import prune_dead
    from systems_envs.rewrite.env import GraphRewriteEnv

    g = graph.copy() if isinstance(graph, Graph) else load_graph(graph)
    prune_dead(g)
    n = len(g)
    m = sum(len(x.inputs) for x in g.nodes.values())
    max_nodes = _capacity(n, cfg.env.node_capacity or 0, min_nodes)
    max_edges = _capacity(m, cfg.env.edge_capacity or 0, min_edges)
    return GraphRewriteEnv(g, rules=rules, max_nodes=max_nodes, max_edges=max_edges,
                           max_candidates=cfg.env.max_candidates, max_steps=cfg.env.max_steps,
                           cost_model=make_cost_model(cost))


def _capacity(size: int, run_capacity: int, previous: int) -> int:
    """Node or edge capacity for a graph of ``size`` nodes (edges): ``previous`` (the last
    episode's capacity) while the graph fills at most 3/4 of it, else the next power of two of
    twice the size, at least the run's ``run_capacity``."""
    if previous and 4 * size <= 3 * previous:
        return previous
    return max(next_pow2(2 * size + 2), run_capacity, previous)


#: loaded checkpoints: (run dir, step, checkpoint mtime) -> (agent, agent state, world model,
#: its params, compiled functions); a second graph of the same run reuses them
_LOADED: dict[tuple, tuple] = {}


def load_run(run_dir: str, graph, cost: str | None = None) -> TrainedRun:
    """Load the latest checkpoint of ``run_dir`` (see the module docstring) for ``graph`` (a
    built-in name, a file, or a `Graph`), costed with the cost model named ``cost`` (default:
    the run's own, ``env.cost``). Raises `CheckpointError` (one line) for a missing, corrupt or
    incompatible run."""
    from controllers.ppo import PPO
    from systems_envs.rewrite.ruleset import default_rules
    from worldmodels.checkpoint import Checkpointer
    from worldmodels.config import ConfigError, load_config, to_dict

    run_dir = os.path.abspath(os.fspath(run_dir))
    if not os.path.isdir(run_dir):
        raise CheckpointError(f"run directory {run_dir} does not exist "
                              "(give a --logdir of python -m experiments.train)")
    try:
        cfg = load_config(run_dir)
    except ConfigError as e:
        raise CheckpointError(f"run {run_dir}: cannot read its config ({e})") from None
    if cfg.env.name != "GraphRewrite-v0":
        raise CheckpointError(f"run {run_dir} trained on {cfg.env.name}, not GraphRewrite-v0")
    if cfg.controller.name != "ppo":
        raise CheckpointError(f"run {run_dir} trained controller {cfg.controller.name!r}; "
                              "a trained optimiser is a ppo run")
    rules = rules_for_run(run_dir, default_rules())
    cost = cfg.env.cost if cost is None else cost
    ckdir = os.path.join(run_dir, "checkpoints")
    if not os.path.isdir(ckdir):
        raise CheckpointError(f"run {run_dir} has no checkpoints/ directory (did the run save a checkpoint?)")
    ck = Checkpointer(ckdir, config=cfg, keep=cfg.loop.keep_checkpoints)
    try:
        step = ck.latest_step()
        if step is None:
            raise CheckpointError(f"run {run_dir}: no checkpoint in {ckdir}")
        meta = ck.read_meta(step)
        ck.check_compatible(meta, step)
        env = _env_for(cfg, graph, cost, rules)
        obs, _ = env.reset(seed=0)
        cache_key = (run_dir, step, os.path.getmtime(os.path.join(ckdir, str(step))))
        if cache_key in _LOADED:
            return TrainedRun(run_dir, cfg, step, env, cost, *_LOADED[cache_key])
        model_based = cfg.loop.mode == "model_based"
        key = jax.random.key(cfg.seed)
        num_rules = len(rules)
        kw = {**to_dict(cfg.controller.ppo), "num_rules": max(cfg.controller.ppo.num_rules, num_rules + 1)}
        jitted: dict = {}
        template: dict[str, Any] = {"env_steps": 0, "iteration": 0, "wall": 0.0, "key": jax.random.fold_in(key, 7)}
        wm = None
        if model_based:
            from controllers.latent import LatentPPO
            from worldmodels.replay import Replay
            from worldmodels.world_model import Trainer, WorldModel

            replay_path = os.path.join(ckdir, f"replay_{step}.npz")
            try:
                replay = Replay.load(replay_path)
            except (FileNotFoundError, ValueError) as e:
                raise CheckpointError(f"run {run_dir}: {e}") from None
            if replay.meta.get("num_rules", num_rules) != num_rules:
                raise CheckpointError(f"run {run_dir} was trained with {replay.meta['num_rules']} rules, "
                                      f"this code has {num_rules}")
            _check_features(run_dir, replay, obs)
            wm = WorldModel.create(cfg.model, "rewrite", cfg.env.max_candidates, num_rules)
            template["wm"] = Trainer(wm).init(wm.init(jax.random.fold_in(key, 1), replay))
            agent = LatentPPO(**kw)
            half = TrainedRun(run_dir, cfg, step, env, cost, agent, None, wm, template["wm"].params, jitted)
            example = jax.tree.map(lambda x: x[0], half.encode([obs]))
            example.pop("slot_conflicts")
            template["agent"] = agent.init(jax.random.fold_in(key, 2), example)
        else:
            agent = PPO(**kw)
            template["agent"] = agent.init(jax.random.fold_in(key, 2), obs)
        state, _ = ck.restore(template, step)
    finally:
        ck.close()
    _LOADED[cache_key] = (agent, state["agent"], wm, state["wm"].params if wm else None, jitted)
    return TrainedRun(run_dir, cfg, step, env, cost, *_LOADED[cache_key])


def _check_features(run_dir: str, replay, obs: dict) -> None:
    """The replay's node/edge/global feature widths (what the model was trained on) match
    this code's observations."""
    for name, arr in (("node", replay.node_features), ("edge", replay.edge_features), ("global", replay.globals)):
        key = {"node": "node_features", "edge": "edge_features", "global": "globals"}[name]
        if arr.shape[-1] != np.shape(obs[key])[-1]:
            raise CheckpointError(f"run {run_dir} was trained on {name} features of width {arr.shape[-1]}, "
                                  f"this code's observations have {np.shape(obs[key])[-1]}")
