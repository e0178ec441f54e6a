"""EGRL (Evolutionary Graph Reinforcement Learning; Khadka et al., ICLR 2021) for
``MemoryPlacement-v0``.

A population of P GNN policies (`controllers.mapping.MappingNet`, one-shot: per-layer logits
[L, A] from the layer graph) is evolved by a genetic algorithm; beside it a policy-gradient
learner trains off the shared replay of every rollout (the population's and its own), and
is periodically migrated into the population. One generation:

1. `EGRL.ask`: the population's greedy mappings (`controllers.mapping.decode`, capacity-
   feasible, argmax) and ``learner_episodes`` mappings sampled from the learner -> actions
   [P + k, L].
2. The caller measures them: real environment (`controllers.mapping.RealFitness`) or the
   outcome model (`controllers.mapping.ModelFitness`). Fitness = final reward (speedup
   over the all-in-slowest-memory mapping).
3. `EGRL.tell`: all rollouts go into the replay (bounded ring buffer); the learner takes
   ``learner_steps`` gradient steps; the GA builds the next population: the ``elites`` best
   unchanged, the others by tournament selection (size ``tournament``), crossover (each
   parameter tensor from either parent with probability 1/2, with probability
   ``crossover_prob``) and mutation (with probability ``mutation_prob``: Gaussian noise of
   ``mutation_std`` x the tensor's RMS on a random ``mutation_frac`` of the weights; 10x
   stronger with probability ``super_mutation_prob``). Every ``migrate_every`` generations the
   learner's actor is copied over the last (non-elite) individual.

The learner is a discrete soft actor-critic for this one-step problem (as EGRL's SAC
learner): a critic GNN gives per-layer values q [L, A], Q(mapping) = mean_i q[i, a_i],
regressed on the standardised fitness; the actor (same architecture as the population)
minimises, per layer, sum_a pi(a) (alpha log pi(a) - q[i, a]). (EGRL's population also
holds Boltzmann chromosomes, direct per-layer distributions; this one holds GNNs only.)

Several problems (graphs) at once: `EGRL` also takes a sequence of `MappingProblem`s of the
same accelerator (one population for all: the GNN reads any layer graph). Then `EGRL.ask_all`
gives each problem's mappings, an individual's fitness is its mean over the problems, the
learner keeps one replay per problem and its losses are the means over the problems (what
the training loop's adapter, `controllers.agents.EGRLAgent`, uses for its training graphs).
With one problem this is exactly the single-graph algorithm (same random numbers).

Everything is seeded by the ``init`` key: same key, same numbers. `train_egrl` runs the
whole thing on a real environment, with fitness ``real`` or ``model`` (outcome model, with
periodic real validation of the model's best individuals), and reports the best real
mapping found.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.flatten_util import ravel_pytree

from controllers.base import register_controller, section_kwargs
from controllers.mapping import MappingNet, MappingProblem, ModelFitness, RealFitness, decode


@struct.dataclass
class Replay:
    """Ring buffer of finished mappings: actions int32 [R, L], reward float32 [R], size and
    next write position int32 []."""

    actions: jax.Array
    reward: jax.Array
    size: jax.Array
    ptr: jax.Array


@struct.dataclass
class EGRLState:
    """population float32 [P, D] (flat parameter vectors); fitness float32 [P] (of the last
    evaluated generation, mean over the problems, aligned with ``population`` rows before
    `EGRL.tell` reorders them: after a tell, row 0 is the best individual measured); actor /
    critic params and their optimizer states; replay: one `Replay` per problem (a tuple);
    key; generation int32 []."""

    population: jax.Array
    fitness: jax.Array
    actor: Any
    critic: Any
    actor_opt: Any
    critic_opt: Any
    replay: tuple
    key: jax.Array
    generation: jax.Array


class EGRL:
    """The EGRL controller for one `MappingProblem` or a sequence of them (static config on
    the object, everything learned in `EGRLState`). See the module docstring for the
    algorithm and arguments."""

    def __init__(self, problem: MappingProblem | Sequence[MappingProblem], pop_size: int = 16, elites: int = 2,
                 tournament: int = 3, crossover_prob: float = 0.5, mutation_prob: float = 0.9,
                 mutation_frac: float = 0.1, mutation_std: float = 0.1, super_mutation_prob: float = 0.05,
                 learner_episodes: int = 4, learner_steps: int = 32, batch_size: int = 64, replay_capacity: int = 4096,
                 lr: float = 1e-3, alpha: float = 0.2, migrate_every: int = 1, width: int = 32, depth: int = 2):
        checks = {"pop_size": pop_size >= 2, "elites": 0 <= elites < pop_size, "tournament": tournament >= 1,
                  "learner_episodes": learner_episodes >= 0, "learner_steps": learner_steps >= 0,
                  "batch_size": batch_size >= 1, "replay_capacity": replay_capacity >= 1,
                  "migrate_every": migrate_every >= 0, "width": width >= 1, "depth": depth >= 0,
                  "alpha": alpha >= 0, "mutation_std": mutation_std >= 0}
        for p in ("crossover_prob", "mutation_prob", "mutation_frac", "super_mutation_prob"):
            checks[p] = 0.0 <= locals()[p] <= 1.0
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"egrl: invalid {bad[0]}={locals()[bad[0]]!r} (pop_size >= 2, 0 <= elites < pop_size, "
                             "probabilities in [0, 1], counts >= 0)")
        problems = (problem,) if isinstance(problem, MappingProblem) else tuple(problem)
        if not problems or len({(p.num_levels, p.nodes.shape[1], p.next_col) for p in problems}) != 1:
            raise ValueError("egrl: needs one or more MappingProblems of the same accelerator and node features")
        self.problems, self.problem = problems, problems[0]
        self.P, self.elites, self.tournament = pop_size, elites, tournament
        self.crossover_prob, self.mutation_prob, self.mutation_frac = crossover_prob, mutation_prob, mutation_frac
        self.mutation_std, self.super_mutation_prob = mutation_std, super_mutation_prob
        self.k, self.learner_steps, self.batch_size = learner_episodes, learner_steps, batch_size
        self.capacity, self.alpha, self.migrate_every = replay_capacity, alpha, migrate_every
        self.net = MappingNet(self.problem.num_actions, width, depth)
        self.arrays = tuple(p.arrays() for p in problems)
        self.graphs = self.arrays[0]["graphs"]
        self.tx = optax.adam(lr)
        shapes = jax.eval_shape(self.net.init, jax.random.key(0), self.graphs)   # no eager Flax init (slow)
        template = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)
        flat, self.unravel = ravel_pytree(template)
        self.dim = flat.shape[0]
        ids = jax.tree.map(lambda x, i: jnp.full(x.shape, i, jnp.int32), template,
                           jax.tree.unflatten(jax.tree.structure(template), list(range(len(jax.tree.leaves(template))))))
        self.leaf_id = ravel_pytree(ids)[0].astype(jnp.int32)        # [D] parameter tensor of each weight
        self.num_leaves = len(jax.tree.leaves(template))
        self.leaf_size = np.array([x.size for x in jax.tree.leaves(template)], np.float32)   # [num_leaves]
        # the problem's arrays are jit arguments, never closed-over constants (see MappingProblem.arrays)
        init, ask, tell, act = (jax.jit(f) for f in (self._init_params, self._ask, self._tell, self._act))
        self._init = lambda key: init(self.arrays[0], key)
        self.ask_all = lambda state: ask(self.arrays, state)
        self.tell_all = lambda state, actions, fitness: tell(self.arrays, state, tuple(actions), tuple(fitness))
        self.act = lambda state, obs, key: act(self.arrays[0], state, obs, key)

    def ask(self, state: EGRLState) -> tuple[jax.Array, EGRLState]:
        """One problem: (actions int32 [P + k, L], state); see `_ask`."""
        self._single("ask")
        actions, state = self.ask_all(state)
        return actions[0], state

    def tell(self, state: EGRLState, actions, fitness) -> tuple[EGRLState, dict]:
        """One problem: the measured ``fitness`` [P + k] of the ``actions`` [P + k, L] `ask` gave."""
        self._single("tell")
        return self.tell_all(state, (actions,), (fitness,))

    def _single(self, what: str) -> None:
        if len(self.problems) != 1:
            raise ValueError(f"egrl: {what} is for one problem; this EGRL has {len(self.problems)} "
                             f"(use {what}_all)")

    # ------------------------------------------------------------------ interface
    def init(self, key: jax.Array, example_obs: Any = None) -> EGRLState:
        """Population of P independently initialised GNNs, a learner, an empty replay.
        ``example_obs`` is unused (the problem fixes the graph); kept for the interface."""
        pop, actor, critic, key = self._init(key)
        replay = tuple(Replay(jnp.zeros((self.capacity, p.num_layers), jnp.int32),
                              jnp.zeros((self.capacity,), jnp.float32), jnp.zeros((), jnp.int32),
                              jnp.zeros((), jnp.int32)) for p in self.problems)
        return EGRLState(pop, jnp.full((self.P,), -jnp.inf, jnp.float32), actor, critic, self.tx.init(actor),
                         self.tx.init(critic), replay, key, jnp.zeros((), jnp.int32))

    def _init_params(self, c: dict, key: jax.Array):
        """(population [P, D], actor params, critic params, next key); ``c``: the problem's arrays."""
        g = c["graphs"]
        k_pop, k_actor, k_critic, key = jax.random.split(key, 4)
        pop = jax.vmap(lambda k: ravel_pytree(self.net.init(k, g))[0])(jax.random.split(k_pop, self.P))
        return pop, self.net.init(k_actor, g), self.net.init(k_critic, g), key

    def update(self, state: EGRLState, batch) -> tuple[EGRLState, dict]:
        """``batch = (actions [P + k, L], fitness [P + k])`` of the mappings `ask` returned."""
        return self.tell(state, *batch)

    def _logits(self, c: dict, flat: jax.Array) -> jax.Array:
        """float32 [L, A] logits of one flat parameter vector [D]."""
        return self.net.apply(self.unravel(flat), c["graphs"])

    def _act(self, c: dict, state: EGRLState, obs: dict, key: jax.Array) -> jax.Array:
        """Step-wise use in the real environment: the champion's (row 0) action for the layer
        the observation marks as next, among the legal ones (``obs["action_mask"]`` [A])."""
        i = jnp.argmax(jnp.asarray(obs["nodes"])[:, self.problem.next_col])
        lg = self._logits(c, state.population[0])[i]
        mask = jnp.asarray(obs["action_mask"])[:lg.shape[0]] > 0
        return jnp.argmax(jnp.where(mask, lg, -jnp.inf)).astype(jnp.int32)

    def _ask(self, cs: tuple, state: EGRLState) -> tuple[tuple, EGRLState]:
        """(per problem, actions int32 [P + k, L]: the population's greedy mappings then k
        learner samples; the state with its key advanced). ``cs``: the problems' arrays."""
        key, k_pop, k_learn = jax.random.split(state.key, 3)
        out = []
        for j, c in enumerate(cs):
            kp, kl = (k_pop, k_learn) if j == 0 else (jax.random.fold_in(k_pop, j), jax.random.fold_in(k_learn, j))
            logits = jax.vmap(lambda f: self._logits(c, f))(state.population)
            pop_acts, _ = jax.vmap(lambda lg, k: decode(c, lg, k, False))(logits, jax.random.split(kp, self.P))
            lg = self.net.apply(state.actor, c["graphs"])
            learn_acts, _ = jax.vmap(lambda k: decode(c, lg, k, True))(jax.random.split(kl, self.k))
            out.append(jnp.concatenate([pop_acts, learn_acts], 0))
        return tuple(out), state.replace(key=key)

    def _tell(self, cs: tuple, state: EGRLState, actions: tuple, fitness: tuple) -> tuple[EGRLState, dict]:
        fitness = tuple(jnp.asarray(f, jnp.float32) for f in fitness)
        replay = tuple(add_to_replay(rp, jnp.asarray(a, jnp.int32), f)
                       for rp, a, f in zip(state.replay, actions, fitness))
        key, k_learn, k_ga = jax.random.split(state.key, 3)
        state = state.replace(replay=replay, key=key, fitness=jnp.stack([f[:self.P] for f in fitness]).mean(0))
        state, lm = self._learn(tuple(c["graphs"] for c in cs), state, k_learn)
        pop = self._next_population(state.population, state.fitness, k_ga)
        gen = state.generation + 1
        migrate = (self.migrate_every > 0) & (gen % max(self.migrate_every, 1) == 0)
        learner = ravel_pytree(state.actor)[0]
        pop = pop.at[-1].set(jnp.where(migrate, learner, pop[-1]))
        order = jnp.argsort(-state.fitness)
        metrics = {"best_fitness": state.fitness.max(), "mean_fitness": state.fitness.mean(),
                   "learner_fitness": jnp.stack([f[self.P:].mean() for f in fitness]).mean() if self.k
                   else jnp.float32(jnp.nan),
                   "migrated": migrate, **lm}
        return state.replace(population=pop, fitness=state.fitness[order], generation=gen), metrics

    def migrate(self, state: EGRLState) -> EGRLState:
        """Copy the learner's actor over the last individual now (what `tell` does every
        ``migrate_every`` generations)."""
        return state.replace(population=state.population.at[-1].set(ravel_pytree(state.actor)[0]))

    # ------------------------------------------------------------------ genetic algorithm
    def _next_population(self, pop: jax.Array, fitness: jax.Array, key: jax.Array) -> jax.Array:
        """[P, D] -> [P, D]: elites first (best first), then tournament / crossover / mutation children."""
        P, D, e = self.P, self.dim, self.elites
        order = jnp.argsort(-fitness)
        n = P - e
        kt, kc, kcm, km, kmm, ks, kn = jax.random.split(key, 7)
        cand = jax.random.randint(kt, (n, 2, self.tournament), 0, P)
        parents = jnp.take_along_axis(cand, jnp.argmax(fitness[cand], -1)[..., None], -1)[..., 0]   # [n, 2]
        p1, p2 = pop[parents[:, 0]], pop[parents[:, 1]]
        cross = jax.random.uniform(kc, (n, 1)) < self.crossover_prob
        take2 = jax.random.bernoulli(kcm, 0.5, (n, self.num_leaves))[:, self.leaf_id]              # [n, D]
        child = jnp.where(cross & take2, p2, p1)
        rms = jnp.sqrt(jax.vmap(lambda c: jax.ops.segment_sum(c ** 2, self.leaf_id, self.num_leaves))(child)
                       / self.leaf_size)
        scale = self.mutation_std * jnp.maximum(jnp.take_along_axis(rms, jnp.broadcast_to(self.leaf_id, (n, D)), 1), 1e-2)
        scale = scale * jnp.where(jax.random.uniform(ks, (n, 1)) < self.super_mutation_prob, 10.0, 1.0)
        mutate = (jax.random.uniform(km, (n, 1)) < self.mutation_prob) & \
                 (jax.random.uniform(kmm, (n, D)) < self.mutation_frac)
        child = child + jnp.where(mutate, scale * jax.random.normal(kn, (n, D)), 0.0)
        return jnp.concatenate([pop[order[:e]], child], 0)

    # ------------------------------------------------------------------ learner
    def _learn(self, graphs: tuple, state: EGRLState, key: jax.Array) -> tuple[EGRLState, dict]:
        """``learner_steps`` discrete-SAC steps on minibatches of the replays (``graphs``: the
        problems' layer graphs; each step's losses are the means over the problems, each on a
        minibatch of its own replay with its rewards standardised by that replay's)."""
        stats = []
        for rp in state.replay:
            valid = jnp.arange(self.capacity) < rp.size
            n = jnp.maximum(rp.size, 1).astype(jnp.float32)
            mean = jnp.where(valid, rp.reward, 0.0).sum() / n
            stats.append((mean, jnp.sqrt(jnp.where(valid, (rp.reward - mean) ** 2, 0.0).sum() / n) + 1e-6))

        def critic_loss(critic, batches):
            losses = []
            for g, (acts, y) in zip(graphs, batches):
                q = self.net.apply(critic, g)                                            # [L, A]
                qa = jnp.take_along_axis(q[None], acts[..., None], -1)[..., 0].mean(-1)  # [B]
                losses.append(((qa - y) ** 2).mean())
            return jnp.stack(losses).mean()

        def actor_loss(actor, qs):
            losses, ents = [], []
            for g, q in zip(graphs, qs):
                logp = jax.nn.log_softmax(self.net.apply(actor, g))                      # [L, A]
                p = jnp.exp(logp)
                losses.append((p * (self.alpha * logp - jax.lax.stop_gradient(q))).sum(-1).mean())
                ents.append(-(p * logp).sum(-1).mean())
            return jnp.stack(losses).mean(), jnp.stack(ents).mean()

        def step(carry, k):
            actor, critic, aopt, copt = carry
            batches = []
            for j, (rp, (mean, std)) in enumerate(zip(state.replay, stats)):
                kj = k if j == 0 else jax.random.fold_in(k, j)
                idx = jax.random.randint(kj, (self.batch_size,), 0, jnp.maximum(rp.size, 1))
                batches.append((rp.actions[idx], (rp.reward[idx] - mean) / std))
            closs, cg = jax.value_and_grad(critic_loss)(critic, batches)
            cu, copt = self.tx.update(cg, copt, critic)
            critic = optax.apply_updates(critic, cu)
            qs = [self.net.apply(critic, g) for g in graphs]
            (aloss, ent), ag = jax.value_and_grad(actor_loss, has_aux=True)(actor, qs)
            au, aopt = self.tx.update(ag, aopt, actor)
            return (optax.apply_updates(actor, au), critic, aopt, copt), (closs, aloss, ent)

        carry = (state.actor, state.critic, state.actor_opt, state.critic_opt)
        (actor, critic, aopt, copt), (cl, al, ent) = jax.lax.scan(step, carry, jax.random.split(key, self.learner_steps))
        empty = jnp.float32(jnp.nan)
        m = {"critic_loss": cl.mean() if self.learner_steps else empty,
             "actor_loss": al.mean() if self.learner_steps else empty,
             "entropy": ent.mean() / math.log(self.problem.num_actions) if self.learner_steps else empty}
        return state.replace(actor=actor, critic=critic, actor_opt=aopt, critic_opt=copt), m


def add_to_replay(replay: Replay, actions: jax.Array, reward: jax.Array) -> Replay:
    """Write K mappings (actions int32 [K, L], reward [K]) at the ring position."""
    cap, K = replay.reward.shape[0], actions.shape[0]
    idx = (replay.ptr + jnp.arange(K)) % cap
    return replay.replace(actions=replay.actions.at[idx].set(actions), reward=replay.reward.at[idx].set(reward),
                          size=jnp.minimum(replay.size + K, cap), ptr=(replay.ptr + K) % cap)


@register_controller("egrl")
def _make_egrl(cfg, problem: MappingProblem | Sequence[MappingProblem] | None = None, env: Any = None, **_):
    """``make_controller("egrl", cfg, env=MemoryPlacementEnv)`` (or ``problem=``: one
    `MappingProblem` or a sequence); options from ``cfg.egrl`` (any of `EGRL`'s keyword
    arguments)."""
    if problem is None:
        if env is None:
            raise ValueError("egrl: needs the MemoryPlacement-v0 environment (env=...) or its MappingProblem")
        problem = MappingProblem.from_env(env)
    kw = section_kwargs(cfg, "egrl")
    for k in ("collect_rows", "measured_fitness"):   # the training loop adapter's options (`controllers.agents.EGRLAgent`)
        kw.pop(k, None)
    return EGRL(problem, **kw)


# ----------------------------------------------------------------------------- driver


@dataclasses.dataclass(frozen=True)
class EGRLRunConfig:
    """How `train_egrl` spends its real budget. fitness: ``real`` (every individual measured
    in the real environment) or ``model`` (outcome model; ``model_episodes`` real episodes
    of diverse behaviour policies train it first unless a trained one is given, then every
    ``validate_every`` generations the ``validate_top`` best individuals by model fitness are
    measured for real); budget: real episodes (new mappings measured); max_generations:
    a cap on generations (0 = none; mappings already measured cost no budget, so a
    converged population could otherwise run for long)."""

    fitness: str = "real"
    budget: int = 400
    model_episodes: int = 120
    model_steps: int = 600
    validate_every: int = 2
    validate_top: int = 2
    max_generations: int = 200


def train_egrl(env, egrl: EGRL, key: jax.Array, run: EGRLRunConfig = EGRLRunConfig(), outcome=None,
               seed: int = 0, on_generation: Callable[[int, dict], None] | None = None) -> dict:
    """Run EGRL on a ``MemoryPlacementEnv`` until ``run.budget`` real episodes are spent.

    ``outcome``: (model, params, node_cap, edge_cap) of a trained outcome model for
    ``fitness="model"`` (None: train one here, its data counted in the budget). Returns
    ``{"best_reward", "best_actions" [L], "episodes", "generations", "curve": [(episodes,
    best real reward)], "history": per-generation metrics, "state", "outcome": the outcome
    model tuple used (None with real fitness)}``."""
    if run.fitness not in ("real", "model"):
        raise ValueError(f"egrl: fitness must be 'real' or 'model', got {run.fitness!r}")
    if run.budget < 1:
        raise ValueError(f"egrl: budget must be >= 1 real episode, got {run.budget}")
    real = RealFitness(env)
    state = egrl.init(key)
    model_fit = None
    if run.fitness == "model":
        if run.validate_every < 1 or run.validate_top < 1:
            raise ValueError("egrl: validate_every and validate_top must be >= 1 with fitness=model")
        if outcome is None:
            outcome, data = fit_outcome_model(env, min(run.model_episodes, run.budget), run.model_steps, seed)
            ok = data.valid
            for acts, r in zip(data.actions[ok], data.reward[ok]):
                real.record(acts, r)
            real.episodes += min(run.model_episodes, run.budget) - int(ok.sum())   # invalid and duplicate ones
            state = state.replace(replay=(add_to_replay(state.replay[0], jnp.asarray(data.actions[ok], jnp.int32),
                                                        jnp.asarray(data.reward[ok], jnp.float32)),))
        model_fit = ModelFitness(*outcome, start_obs=getattr(env, "unwrapped", env).reset(seed=0)[0])
    history, gen = [], 0
    reserve = 0 if model_fit is None else 1       # model mode measures its final champion
    while real.episodes + reserve < run.budget and (not run.max_generations or gen < run.max_generations):
        actions, state = egrl.ask(state)
        acts = np.asarray(actions)
        if model_fit is None:
            fit = real(acts)
        else:
            fit = model_fit(acts)
        state, m = egrl.tell(state, actions, fit)
        gen += 1
        m = {k: float(v) for k, v in m.items()}
        if model_fit is not None and gen % run.validate_every == 0:
            top = np.argsort(-fit[:egrl.P], kind="stable")[:run.validate_top]
            m["validated_real"] = float(real(acts[top]).max())
        m.update(generation=gen, real_episodes=real.episodes, best_real=real.best_reward)
        history.append(m)
        if on_generation is not None:
            on_generation(gen, m)
    if model_fit is not None:
        real(np.asarray(egrl.ask(state)[0])[:1])    # the final champion (row 0), measured
    return {"best_reward": real.best_reward, "best_actions": real.best_actions, "episodes": real.episodes,
            "generations": gen, "curve": real.curve, "history": history, "state": state, "outcome": outcome}


def fit_outcome_model(env, episodes: int, steps: int, seed: int):
    """Collect ``episodes`` real episodes of ``env``'s graph (`worldmodels.outcome_data`) and
    fit an outcome model on them. Returns ((model, params, node_cap, edge_cap), data)."""
    from worldmodels.outcome import OutcomeConfig, OutcomeModel, capacities, fit, placement_set
    from worldmodels.outcome_data import collect_outcomes

    e = getattr(env, "unwrapped", env)
    data = collect_outcomes("MemoryPlacement-v0", [e.lg.name], episodes, seed=seed,
                            env_kwargs={"accelerator": e.acc})
    node_cap, edge_cap = capacities([data])
    train = placement_set(data, node_cap, edge_cap)
    model = OutcomeModel(OutcomeConfig(steps=steps), data.layout, log_target=bool((train.reward > 0).all()))
    params, _ = fit(model, train, seed=seed)
    return (model, params, node_cap, edge_cap), data
