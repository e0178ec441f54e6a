"""EGRL on MemoryPlacement-v0: decoder legality, GA progress, migration, seeding, model fitness."""
import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import systems_envs  # noqa: F401
from controllers import make_controller
from controllers.egrl import EGRL, EGRLRunConfig, train_egrl
from controllers.mapping import MappingProblem, ModelFitness, RealFitness, decode, real_episode

TINY = dict(pop_size=4, elites=1, learner_episodes=2, learner_steps=2, batch_size=8, replay_capacity=64,
            width=8, depth=1)


@pytest.fixture(scope="module")
def env():
    return gym.make("MemoryPlacement-v0", graph="squeezenet").unwrapped


@pytest.fixture(scope="module")
def problem(env):
    return MappingProblem.from_env(env)


def test_decoded_mappings_are_legal_in_the_real_env(env, problem):
    # logits biased to the fast levels make capacity bind on many layers
    bias = jnp.array([4.0, 3, 1, 3, 2, 0, 1, 0, -1])
    logits = 3 * jax.random.normal(jax.random.key(0), (6, problem.num_layers, 9)) + bias
    acts, ok = jax.jit(jax.vmap(lambda lg, k: decode(problem, lg, k, True)))(logits, jax.random.split(jax.random.key(1), 6))
    assert bool(ok.all())
    rewards = [real_episode(env, a) for a in np.asarray(acts)]
    assert all(valid for _, valid in rewards)
    assert len({np.asarray(a).tobytes() for a in acts}) == 6           # really different mappings
    # greedy decode of all-fast preferences = the mask rule: every layer gets the fastest pair that fits
    greedy, _ = decode(problem, jnp.broadcast_to(-jnp.arange(9.0), (problem.num_layers, 9)), jax.random.key(0), False)
    obs, _ = env.reset(seed=0)
    for a in np.asarray(greedy):
        assert a == np.flatnonzero(obs["action_mask"])[0]
        obs, *_ = env.step(int(a))


def test_ga_improves_fitness_over_generations(problem):
    """A synthetic fitness (share of layers mapped to a hidden target action) the GA alone
    must climb: learner off, no migration."""
    target = jnp.asarray(np.random.default_rng(0).integers(0, 9, problem.num_layers))
    egrl = EGRL(problem, **{**TINY, "pop_size": 8, "elites": 2, "learner_episodes": 0, "learner_steps": 0},
                migrate_every=0, mutation_std=0.5)
    state = egrl.init(jax.random.key(0))
    best = []
    for _ in range(25):
        acts, state = egrl.ask(state)
        fit = (acts == target).mean(-1)
        best.append(float(fit.max()))
        state, _ = egrl.tell(state, acts, fit)
    assert best[-1] > best[0] + 0.1
    assert all(b2 >= b1 for b1, b2 in zip(best, best[1:]))          # elitism: the best never gets lost


def test_migration_copies_the_learner_into_the_population(problem):
    egrl = EGRL(problem, **TINY, migrate_every=1)
    state = egrl.init(jax.random.key(1))
    acts, state = egrl.ask(state)
    state, m = egrl.tell(state, acts, jnp.arange(acts.shape[0], dtype=jnp.float32))
    assert bool(m["migrated"])
    np.testing.assert_array_equal(state.population[-1], ravel_pytree(state.actor)[0])
    assert int(state.replay.size) == acts.shape[0]
    never = EGRL(problem, **TINY, migrate_every=0)
    s2 = never.init(jax.random.key(1))
    a2, s2 = never.ask(s2)
    s2, m2 = never.tell(s2, a2, jnp.arange(a2.shape[0], dtype=jnp.float32))
    assert not bool(m2["migrated"])
    assert not np.array_equal(s2.population[-1], ravel_pytree(s2.actor)[0])


def test_same_seed_same_numbers_and_real_budget(env, problem):
    egrl = make_controller("egrl", {"egrl": TINY}, env=env)
    run = EGRLRunConfig(fitness="real", budget=14, max_generations=6)
    r1 = train_egrl(env, egrl, jax.random.key(3), run)
    r2 = train_egrl(env, egrl, jax.random.key(3), run)
    assert r1["curve"] == r2["curve"] and r1["best_reward"] == r2["best_reward"]
    assert r1["episodes"] <= 14 + egrl.P + egrl.k
    assert r1["best_reward"] == max(b for _, b in r1["curve"]) > 1.0
    assert real_episode(env, r1["best_actions"])[0] == r1["best_reward"]
    r3 = train_egrl(env, egrl, jax.random.key(4), run)
    assert r3["curve"] != r1["curve"]
    # the champion plays step by step through the controller interface
    obs, _ = env.reset(seed=0)
    while True:
        obs, r, term, _, info = env.step(int(egrl.act(r1["state"], obs, jax.random.key(0))))
        if term:
            break
    assert info["valid"]


def test_model_fitness_trains_an_outcome_model_and_validates_for_real(env):
    egrl = EGRL(MappingProblem.from_env(env), **TINY)
    run = EGRLRunConfig(fitness="model", budget=20, model_episodes=12, model_steps=10, validate_every=1,
                        validate_top=1, max_generations=3)
    res = train_egrl(env, egrl, jax.random.key(0), run)
    assert res["generations"] == 3
    assert all("validated_real" in h for h in res["history"])
    assert 12 < res["episodes"] <= 12 + 3 + 1
    assert res["best_reward"] > 1.0
    with pytest.raises(ValueError, match="fitness must be"):
        train_egrl(env, egrl, jax.random.key(0), EGRLRunConfig(fitness="dream"))


def test_model_fitness_scores_match_the_outcome_model(env):
    from controllers.egrl import fit_outcome_model
    from worldmodels.outcome import capacities, placement_set, predict

    (model, params, nc, ec), data = fit_outcome_model(env, 10, 5, seed=0)
    fitness = ModelFitness(model, params, nc, ec, env.reset(seed=0)[0], chunk=4)
    ok = np.flatnonzero(data.valid)[:5]
    got = fitness(data.actions[ok])
    want = predict(model, params, placement_set(data.subset(ok), *capacities([data])).placed)
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_real_fitness_caches_and_counts(env):
    real = RealFitness(env)
    acts = np.full((2, len(env.lg)), 8, np.int32)                        # all in DRAM, twice
    np.testing.assert_allclose(real(acts), [1.0, 1.0])
    assert real.episodes == 1 and real.best_reward == pytest.approx(1.0)


def test_bad_options_are_rejected(problem):
    with pytest.raises(ValueError, match="elites"):
        EGRL(problem, pop_size=4, elites=4)
    with pytest.raises(ValueError, match="MemoryPlacement"):
        MappingProblem.from_env(gym.make("DevicePlacement-v0", graph="squeezenet"))
