"""The agent interface of the training loop, and one adapter per controller.

The loop (`worldmodels.loop`) talks to a controller only through an `Agent`; it never
looks at the controller's name. An agent acts on a *batch* of observations (graph
observations in model-free mode, model observations in model-based mode, see
`controllers.latent`), gives values, trains on real data and trains in imagination; all
its learned state is one pytree (checkpointed by the loop).

- ``init(key, example_obs) -> state`` (one unbatched observation)
- ``policy(state, obs, key, greedy, model) -> (action, log_prob, value)``: one observation,
  pure (traced inside the imagined-return scan); ``model`` is the imagined env's
  `worldmodels.dream.DreamParams` (only a planner uses it)
- ``act(state, obs_batch, key, greedy, model)``: NumPy (action, log_prob, value) [B]
- ``values(state, obs_batch)``: NumPy [B] (bootstrap values of cut episodes)
- ``train_real(state, batch, key) -> (state, metrics)``: model-free update on the real
  `controllers.rollout.Transition` batch [T, B]
- ``train_imagined(state, imagination, key, real_batch, n_real) -> (state, metrics)``:
  model-based updates, ``n_real`` of them on the (re-encoded) real batch
- ``clone(state, obs_batch, actions, steps, lr, batch, seed) -> (state, metrics)``: behaviour
  cloning (cross-entropy on demonstrated actions [N], Adam on minibatches of ``batch``) as a
  warm start; only agents with a policy distribution implement it
- ``train_on_episodes(state, run_episode, key) -> (state, metrics, steps, returns)``: for
  agents with ``trains_on_real_episodes`` (evolution: fitness = whole real episodes) in
  model-free mode; ``run_episode(action_fn, seed, instance=None) -> (return, steps)``
  (`worldmodels.collector.Collector.episode_return`).

Flags: ``learns`` (has something to train), ``uses_real_batch`` (wants the PPO-format batch
of collected steps), ``needs_model`` (acts by planning: model-based mode only),
``reads_graph_obs`` (acts on graph observations in both modes, never on model observations:
the loop then skips its imagined-return check in validation).

Adding a controller to the loop: write its adapter (subclass `Agent`) and register it with
``@register_agent("name")``; names are the ``--controller.name`` values.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from controllers.base import get_mask, make_controller, random_legal_action, section_kwargs
from controllers.registry import Registry

AGENTS = Registry("training-loop controller", flag="--controller.name")


def register_agent(name: str):
    """Decorator: ``@register_agent("ppo")`` on a factory ``f(cfg, model_based, **deps) -> Agent``."""
    return AGENTS.register(name)


def agent_names() -> list[str]:
    return AGENTS.names()


def make_agent(name: str, cfg: Any, model_based: bool, **deps: Any) -> "Agent":
    """The loop's agent for ``--controller.name name`` (ValueError naming the known ones).
    ``deps``: ``num_rules`` (rewriting), ``dream`` (the imagined env, model-based), ``task``
    (the `worldmodels.tasks.Task`: its environments and instances, for controllers built
    per problem)."""
    if name not in AGENTS:
        from controllers.base import registered_controllers
        if name in registered_controllers():
            raise ValueError(f"--controller.name {name}: this controller has no training-loop adapter "
                             f"(add one with controllers.agents.register_agent; have: {', '.join(agent_names())})")
    agent = AGENTS.get(name)(cfg, model_based, **deps)
    if agent.needs_model and not model_based:
        raise ValueError(f"--controller.name {name} needs a world model: use --loop.mode model_based")
    return agent


class Imagination(NamedTuple):
    """What an agent trains in: the imagined env (`worldmodels.dream.DreamEnv`), its params
    (`worldmodels.dream.DreamParams`), a pool of start entries [S, ...] and the batch shape
    (``num_envs`` rollouts of ``rollout_len`` steps per update); for an agent that
    ``reads_measured``, the mappings the real environment has measured
    (`worldmodels.outcome_online.measured_mappings`)."""

    env: Any
    params: Any
    starts: Any
    num_envs: int
    updates: int
    measured: Any = None


class Agent:
    """Base adapter: batched jitted acting and values from the pure per-observation ones."""

    learns = True
    uses_real_batch = False
    needs_model = False
    trains_on_real_episodes = False
    reads_graph_obs = False
    reads_measured = False      # model-based: wants `Imagination.measured`

    def __init__(self):
        self._acts: dict[bool, Callable] = {}
        self._values = jax.jit(jax.vmap(self.value, in_axes=(None, 0)))

    def init(self, key, example_obs):
        get_mask(example_obs)
        return {"none": np.zeros(())}

    def policy(self, state, obs, key, greedy: bool, model=None):
        raise NotImplementedError

    def value(self, state, obs):
        return jnp.float32(0.0)

    def act(self, state, obs, key, greedy: bool = False, model=None):
        greedy = bool(greedy)
        if greedy not in self._acts:
            self._acts[greedy] = jax.jit(jax.vmap(lambda s, o, k, m: self.policy(s, o, k, greedy, m),
                                                  in_axes=(None, 0, 0, None)))
        n = int(np.shape(obs["action_mask"])[0])
        return jax.device_get(self._acts[greedy](state, obs, jax.random.split(key, n), model))

    def values(self, state, obs) -> np.ndarray:
        return np.asarray(self._values(state, obs), np.float32)

    def train_real(self, state, batch, key):
        return state, {}

    def train_imagined(self, state, imagination: Imagination, key, real_batch=None, n_real: int = 0):
        return state, {}

    def train_on_episodes(self, state, run_episode, key):
        raise NotImplementedError(f"{type(self).__name__} does not train on whole real episodes")

    def clone(self, state, obs, actions, steps: int, lr: float, batch: int = 32, seed: int = 0):
        raise ValueError(f"--loop.bc_steps: {type(self).__name__} has no behaviour cloning (PPO has)")


# ============================================================================ PPO


class PPOAgent(Agent):
    """Masked PPO: the GNN policy over graph observations (model-free) or the latent policy
    over model observations (model-based); imagined updates collect ``num_envs x
    rollout_len`` imagined steps and make one PPO update each."""

    uses_real_batch = True

    def __init__(self, cfg, model_based: bool, num_rules: int = 0, **_):
        from controllers.latent import LatentPPO
        from controllers.ppo import PPO
        kw = section_kwargs(cfg, "ppo")
        kw["num_rules"] = max(kw.get("num_rules", 256), num_rules + 1)
        self.ppo = LatentPPO(**kw) if model_based else PPO(**kw)
        self.rollout_len = self.ppo.rollout_len
        self._dream_update = {}
        super().__init__()

    def init(self, key, example_obs):
        return self.ppo.init(key, example_obs)

    def policy(self, state, obs, key, greedy, model=None):
        logp, v = self.ppo.distribution(state.params, obs)
        a = (jnp.argmax(logp) if greedy else jax.random.categorical(key, logp)).astype(jnp.int32)
        return a, logp[a], v

    def value(self, state, obs):
        return self.ppo.value(state, obs)

    def clone(self, state, obs, actions, steps, lr, batch: int = 32, seed: int = 0):
        """Behaviour cloning on (obs [N, ...], actions [N]): ``steps`` Adam steps, each on a
        minibatch of ``batch`` demonstrations drawn without replacement (the whole set when
        N <= batch; a full batch of hundreds of large graphs does not fit a CPU's memory).
        The PPO optimiser state is reset afterwards. Metrics, over all N demonstrations: final
        ``bc/loss`` (mean -log p of the demonstrated action) and ``bc/accuracy`` (the policy's
        most probable action is the demonstrated one)."""
        import optax
        if batch < 1:
            raise ValueError(f"--loop.bc_batch must be >= 1, got {batch}")
        dist = jax.vmap(self.ppo.distribution, in_axes=(None, 0))
        actions = np.asarray(actions, np.int32)
        n = len(actions)
        b = min(batch, n)

        def loss(params, o, a):
            logp = dist(params, o)[0]
            return -jnp.take_along_axis(logp, a[:, None], axis=1).mean(), logp

        tx = optax.adam(lr)

        @jax.jit
        def step(params, opt, o, a):
            (l, _), g = jax.value_and_grad(loss, has_aux=True)(params, o, a)
            upd, opt = tx.update(g, opt, params)
            return optax.apply_updates(params, upd), opt

        take = lambda idx: jax.tree_util.tree_map(lambda x: x[idx], obs)   # noqa: E731
        params, opt = state.params, tx.init(state.params)
        rng = np.random.default_rng(seed)
        for _ in range(int(steps)):
            idx = rng.choice(n, size=b, replace=False)
            params, opt = step(params, opt, take(idx), jnp.asarray(actions[idx]))
        evaluate = jax.jit(loss)
        nll, hits = 0.0, 0
        for s in range(0, n, b):      # fixed-size chunks (the last one wraps) so evaluate compiles once
            idx = np.arange(s, s + b) % n
            keep = min(b, n - s)
            _, logp = evaluate(params, take(idx), jnp.asarray(actions[idx]))
            logp = np.asarray(logp)[:keep]
            a = actions[idx][:keep]
            nll -= float(logp[np.arange(keep), a].sum())
            hits += int((logp.argmax(axis=1) == a).sum())
        m = {"bc/loss": nll / n, "bc/accuracy": hits / n}
        return state.replace(params=params, opt_state=self.ppo.tx.init(params)), m

    def train_real(self, state, batch, key):
        state, m = self.ppo.update(state, batch)
        return state, {f"controller/{k}": float(v) for k, v in m.items()}

    def _dream_fn(self, dream, n_envs: int):
        k_ = (id(dream), n_envs)
        if k_ not in self._dream_update:
            from controllers.rollout import collect_imagined, reset_imagined
            ppo, T = self.ppo, self.rollout_len

            def f(agent_state, params, pool, key):
                from worldmodels.imagined_env import imagination_key
                k1, k2 = jax.random.split(imagination_key(key))   # cheap per-step draws (see imagined_env)
                carry = reset_imagined(dream.reset, params, pool, k1, n_envs)
                _, batch = collect_imagined(dream.reset, dream.step, params, ppo, agent_state, carry, k2, T)
                agent_state, m = ppo._update(agent_state, batch)
                done = (batch.terminated | batch.truncated).astype(jnp.float32)
                m["imagined_return"] = (batch.episode_return * done).sum() / jnp.maximum(done.sum(), 1.0)
                m["imagined_episodes"] = done.sum()
                return agent_state, m
            self._dream_update[k_] = jax.jit(f)
        return self._dream_update[k_]

    def train_imagined(self, state, imagination, key, real_batch=None, n_real=0):
        f = self._dream_fn(imagination.env, imagination.num_envs)
        rets, ms = [], []
        for u in range(imagination.updates):
            key, k = jax.random.split(key)
            if u < n_real:
                state, m = self.ppo.update(state, real_batch)
            else:
                state, m = f(state, imagination.params, imagination.starts, k)
                if float(m["imagined_episodes"]) > 0:
                    rets.append(float(m["imagined_return"]))
            ms.append(m)
        out = {f"controller/{k_}": float(np.mean([float(m[k_]) for m in ms])) for k_ in ("loss", "entropy", "approx_kl")}
        if rets:
            out["imagined/episode_return"] = float(np.mean(rets))
        return state, out


@register_agent("ppo")
def _ppo(cfg, model_based, **deps):
    return PPOAgent(cfg, model_based, **deps)


# ============================================================================ evolution (CMA-ES)


class EvolutionAgent(Agent):
    """A population controller with ``ask(state) -> (population, state)``, ``update(state,
    (population, returns))``, ``scores(params, obs)`` and ``make_fitness`` (e.g.
    `controllers.cmaes.CMAESController`): acts by argmax of the mean's scores; fitness =
    imagined episodes (model-based) or one real episode per member (model-free)."""

    trains_on_real_episodes = True

    def __init__(self, controller):
        self.c = controller
        self._generation = {}
        self._scores = jax.jit(controller.scores)
        super().__init__()

    def init(self, key, example_obs):
        return self.c.init(key, example_obs)

    def policy(self, state, obs, key, greedy, model=None):
        return jnp.argmax(self.c.scores(state.params, obs)).astype(jnp.int32), jnp.float32(0.0), jnp.float32(0.0)

    def train_imagined(self, state, imagination, key, real_batch=None, n_real=0):
        dream = imagination.env
        if id(dream) not in self._generation:
            c = self.c

            def gen(state, params, pool, key):
                fitness = c.make_fitness(dream.reset, dream.step, params, pool)
                pop, state = c.ask(state)
                returns = jax.vmap(fitness, in_axes=(0, None))(pop, key)  # common random numbers
                return c.update(state, (pop, returns))
            self._generation[id(dream)] = jax.jit(gen)
        g = self._generation[id(dream)]
        m = {}
        for _ in range(imagination.updates):
            key, k = jax.random.split(key)
            state, m = g(state, imagination.params, imagination.starts, k)
        return state, ({"imagined/episode_return": float(m["mean_return"])} if m else {})

    def train_on_episodes(self, state, run_episode, key):
        pop, state = self.c.ask(state)
        seed = int(jax.random.randint(key, (), 0, 2**31 - 1))
        returns, steps = [], 0
        for j in range(self.c.popsize):
            params = jax.tree_util.tree_map(lambda x: x[j], pop)
            ret, n = run_episode(lambda obs, p=params: int(jnp.argmax(self._scores(p, obs))), seed)
            returns.append(ret)
            steps += n
        state, m = self.c.update(state, (pop, jnp.asarray(returns)))
        return state, {"controller/best_return_ever": float(m["best_return_ever"])}, steps, returns


@register_agent("cmaes")
def _cmaes(cfg, model_based, **_):
    from controllers.latent import latent_features
    return EvolutionAgent(make_controller("cmaes", cfg, **({"features": latent_features} if model_based else {})))


# ============================================================================ EGRL


class EGRLAgent(Agent):
    """EGRL (`controllers.egrl.EGRL`) on ``MemoryPlacement-v0``: one population of GNNs for
    all training graphs (an individual's fitness: its mean final reward, the speedup, over
    them; one learner replay per graph).

    A generation asks for every graph's one-shot mappings (the P individuals' greedy decodes
    and the learner's samples) and measures them: model-free, each mapping is one real
    episode of its graph through the loop's collector (`train_on_episodes`; every mapping is
    played, elites again too, so the real-step count is every step taken); model-based, the
    loop's outcome model scores them (`train_imagined`, ``loop.controller_updates_per_iter``
    generations per iteration, no real step), and the real check of the model's choice is
    the loop's own: its collector plays the champion (with ``loop.explore_eps`` random
    actions; with ``controller.egrl.collect_rows`` R > 1, population rows 0..R-1, see `act`)
    every iteration, those episodes refit the outcome model, and validation measures the
    champion on the real environment. With ``controller.egrl.measured_fitness``, a mapping
    that a real episode has played scores its measured final reward instead of the model's
    prediction (`Imagination.measured`), so a champion the model overrates loses its place
    as soon as it has been played.

    Acting (collection and validation, training and held-out graphs): the champion (row 0
    after a generation) step by step on graph observations; its logits come from the layer
    graph as at reset (`controllers.mapping.reset_graph`) and the action is the argmax over
    the environment's mask, so a real episode plays exactly the champion's decoded mapping
    (tested). The agent's state is the `controllers.egrl.EGRLState` (checkpointed); EGRL
    draws its random numbers from the key inside it, so the loop's keys go unused."""

    trains_on_real_episodes = True
    reads_graph_obs = True

    def __init__(self, cfg, model_based: bool, task=None, dream=None):
        from controllers.mapping import MappingProblem, ModelFitness
        env_name = None if task is None else task.cfg.env.name
        if env_name != "MemoryPlacement-v0":
            raise ValueError(f"--controller.name egrl: EGRL maps whole layer graphs of MemoryPlacement-v0; "
                             f"--env.name {env_name} is not supported")
        self.instances = list(task.train)
        envs = [task.make_env([g]).env for g in self.instances]
        self.egrl = make_controller("egrl", cfg, problem=[MappingProblem.from_env(e) for e in envs])
        self.M, self.next_col = self.egrl.problem.num_levels, self.egrl.problem.next_col
        self.collect_rows = min(int(task.cfg.controller.egrl.collect_rows), self.egrl.P)
        if self.collect_rows < 1:
            raise ValueError(f"--controller.egrl.collect_rows must be >= 1, got {self.collect_rows}")
        self.model_fitness = None
        self.reads_measured = bool(model_based and task.cfg.controller.egrl.measured_fitness)
        if model_based:
            if dream is None or dream.outcome is None:
                raise ValueError("--controller.name egrl --loop.mode model_based: needs the outcome model "
                                 "(--loop.outcome.enabled true)")
            chunk = self.egrl.P + self.egrl.k
            optimism = task.cfg.loop.outcome.optimism
            self.model_fitness = [ModelFitness(dream.outcome, None, *task.capacity(), e.reset(seed=0)[0], chunk=chunk,
                                               optimism=optimism) for e in envs]
        super().__init__()

    def init(self, key, example_obs):
        get_mask(example_obs)
        return self.egrl.init(key)

    def policy(self, state, obs, key, greedy, model=None):
        return self._row_policy(state, obs, 0)

    def _row_policy(self, state, obs, row):
        """Population row ``row``'s action (row 0: the champion) as `policy` describes."""
        from controllers.mapping import reset_graph
        egrl, A = self.egrl, self.M * self.M
        logits = egrl.net.apply(egrl.unravel(state.population[row]), reset_graph(obs, self.M, self.next_col))
        layer = logits[jnp.argmax(jnp.asarray(obs["node_features"])[:, self.next_col])]
        mask = get_mask(obs)[:A]
        a = jnp.where(mask.any(), jnp.argmax(jnp.where(mask, layer, -jnp.inf)), A - 1).astype(jnp.int32)
        return a, jnp.float32(0.0), jnp.float32(0.0)

    def act(self, state, obs, key, greedy: bool = False, model=None):
        """Validation (``greedy``) and model-free use: the champion in every environment.
        Model-based collection with ``controller.egrl.collect_rows`` R > 1: environment i plays
        population row i mod R (the elites best first, then the newest children), so the
        real episodes that refit the outcome model cover more than the champion's mappings."""
        if greedy or self.model_fitness is None or self.collect_rows == 1:
            return super().act(state, obs, key, greedy, model)
        if "rows" not in self._acts:
            self._acts["rows"] = jax.jit(jax.vmap(self._row_policy, in_axes=(None, 0, 0)))
        n = int(np.shape(obs["action_mask"])[0])
        rows = jnp.arange(n, dtype=jnp.int32) % self.collect_rows
        return jax.device_get(self._acts["rows"](state, obs, rows))

    @staticmethod
    def _metrics(m: dict) -> dict:
        return {f"controller/{k}": float(v) for k, v in m.items() if k != "migrated"}

    def train_on_episodes(self, state, run_episode, key):
        actions, state = self.egrl.ask_all(state)
        fitness, returns, steps = [], [], 0
        for g, acts in zip(self.instances, actions):
            f = []
            for a in np.asarray(acts).tolist():
                ret, n = run_episode(lambda obs, it=iter(a): next(it), 0, g)
                f.append(ret)
                steps += n
            fitness.append(np.asarray(f, np.float32))
            returns += f
        state, m = self.egrl.tell_all(state, actions, fitness)
        return state, self._metrics(m), steps, returns

    def train_imagined(self, state, imagination, key, real_batch=None, n_real=0):
        params, m, n_measured = imagination.params.outcome, {}, 0
        measured = (imagination.measured or {}) if self.reads_measured else {}
        for _ in range(imagination.updates):
            actions, state = self.egrl.ask_all(state)
            fitness = []
            for f, a, g in zip(self.model_fitness, actions, self.instances):
                a = np.asarray(a)
                fit, real = f(a, params), measured.get(g, {})
                for i, row in enumerate(a.tolist()):
                    if tuple(row) in real:
                        fit[i] = real[tuple(row)]
                        n_measured += 1
                fitness.append(fit)
            state, m = self.egrl.tell_all(state, actions, fitness)
        if not m:
            return state, {}
        out = {"imagined/episode_return": float(m["mean_fitness"]), **self._metrics(m)}
        if self.reads_measured:
            out["controller/measured_fraction"] = n_measured / (imagination.updates * sum(len(a) for a in actions))
        return state, out


@register_agent("egrl")
def _egrl(cfg, model_based, task=None, dream=None, **_):
    return EGRLAgent(cfg, model_based, task=task, dream=dream)


# ============================================================================ planner, random


class PlannerAgent(Agent):
    """CEM / random-shooting MPC in the imagined env (nothing to train; the world model is
    given at act time, with the planner's own horizon)."""

    learns = False
    needs_model = True

    def __init__(self, cfg, dream=None, **_):
        if dream is None:
            self.planner = None
        else:
            self.planner = make_controller("planner", cfg, model_reset=dream.reset, model_step=dream.step)
        self.horizon = section_kwargs(cfg, "planner").get("horizon", 8)
        super().__init__()

    def policy(self, state, obs, key, greedy, model=None):
        from controllers.planner import PlannerState
        model = model._replace(horizon=jnp.int32(self.horizon))
        return self.planner._plan(PlannerState(model), obs, key)[0], jnp.float32(0.0), jnp.float32(0.0)


@register_agent("planner")
def _planner(cfg, model_based, dream=None, **_):
    return PlannerAgent(cfg, dream=dream)


class RandomAgent(Agent):
    """Uniform over the legal actions."""

    learns = False

    def policy(self, state, obs, key, greedy, model=None):
        return random_legal_action(key, get_mask(obs)), jnp.float32(0.0), jnp.float32(0.0)


@register_agent("random")
def _random(cfg, model_based, **_):
    return RandomAgent()
