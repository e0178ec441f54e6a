"""The training loop's EGRL adapter (`controllers.agents.EGRLAgent`) and EGRL on several
graphs: the padded graph observation gives the reset layer graph, the step-wise champion
plays its decoded mapping, a generation measured through the collector, errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from controllers.agents import make_agent
from controllers.base import stack_observations
from controllers.mapping import MappingNet, MappingProblem, decode, reset_graph
from worldmodels.collector import Collector
from worldmodels.config import replace_path, tiny_config
from worldmodels.tasks import make_task


def _cfg(env="MemoryPlacement-v0", graph="squeezenet", heldout=""):
    return replace_path(tiny_config(), {"env.name": env, "env.graph": graph, "env.heldout": heldout})


@pytest.fixture(scope="module")
def task():
    return make_task(_cfg(graph="squeezenet", heldout="resnet50"))


@pytest.fixture(scope="module")
def agent(task):
    return make_agent("egrl", task.cfg.controller, False, task=task)


def _play(task, agent, state, instance):
    """The agent's greedy actions and the final info of one real episode of ``instance``."""
    env = task.make_env([instance])
    o, _ = env.reset(seed=0)
    acts, done = [], False
    while not done:
        a = int(agent.act(state, stack_observations([task.graph_obs(o)]), jax.random.key(0), True)[0][0])
        acts.append(a)
        o, r, te, tr, info = env.step(a)
        done = te or tr
    return acts, r, info


def test_reset_graph_of_any_padded_observation_is_the_problem_graph(task):
    env = task.make_env(["resnet50"])
    problem = MappingProblem.from_env(env.env)
    net = MappingNet(problem.num_actions, 8, 2)
    params = net.init(jax.random.key(0), problem.graphs())
    want = net.apply(params, problem.graphs())
    o, _ = env.reset(seed=0)
    for _ in range(5):                       # mid-episode: some layers mapped, the mark moved
        o, *_ = env.step(int(np.flatnonzero(o["action_mask"])[0]))
    go = task.graph_obs(o)
    assert go["node_features"].shape[0] > problem.num_layers              # padded
    g = reset_graph(go, problem.num_levels, problem.next_col)
    np.testing.assert_array_equal(g.nodes[:problem.num_layers], problem.nodes)
    got = net.apply(params, g)[:problem.num_layers]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_the_champion_plays_its_decoded_mapping_on_training_and_heldout_graphs(task, agent):
    col = Collector(task, 1)
    state = agent.init(jax.random.key(0), jax.tree.map(lambda x: x[0], stack_observations(
        [task.graph_obs(col.envs[0].reset(seed=0)[0])])))
    state, m, steps, returns = agent.train_on_episodes(state, col.episode_return, jax.random.key(1))
    for g in ("squeezenet", "resnet50"):       # a held-out graph too: the GNN reads any layer graph
        problem = MappingProblem.from_env(task.make_env([g]).env)
        logits = agent.egrl.net.apply(agent.egrl.unravel(state.population[0]), problem.graphs())
        decoded, ok = decode(problem.arrays(), logits, jax.random.key(0), False)
        acts, reward, info = _play(task, agent, state, g)
        assert acts == np.asarray(decoded).tolist() and info["valid"] and bool(ok)
        if g == "squeezenet":                  # the champion's measured fitness
            assert reward == pytest.approx(float(state.fitness[0]))


def test_a_generation_on_real_episodes_counts_every_step(task, agent):
    col = Collector(task, 1)
    obs0 = jax.tree.map(lambda x: x[0], stack_observations([task.graph_obs(col.envs[0].reset(seed=0)[0])]))
    runs = []
    for _ in range(2):
        state = agent.init(jax.random.key(3), obs0)
        state, m, steps, returns = agent.train_on_episodes(state, col.episode_return, jax.random.key(1))
        state, m, steps, returns = agent.train_on_episodes(state, col.episode_return, jax.random.key(2))
        runs.append((state, m, steps, returns))
    (s1, m1, n1, r1), (s2, m2, n2, r2) = runs
    e = agent.egrl
    assert len(r1) == e.P + e.k and n1 == (e.P + e.k) * task.episode_steps
    assert m1["controller/best_fitness"] == pytest.approx(max(r1[:e.P])) and max(r1) > 1.0
    assert "controller/critic_loss" in m1
    assert r1 == r2 and m1 == m2                                    # same key, same numbers
    np.testing.assert_array_equal(s1.population, s2.population)


def test_egrl_on_several_graphs():
    task = make_task(_cfg(graph="squeezenet,resnet50"))
    e = make_agent("egrl", task.cfg.controller, False, task=task).egrl
    state = e.init(jax.random.key(0))
    acts, state = e.ask_all(state)
    assert [a.shape for a in acts] == [(e.P + e.k, p.num_layers) for p in e.problems]
    fit = [jnp.arange(e.P + e.k, dtype=jnp.float32), 2 * jnp.arange(e.P + e.k, dtype=jnp.float32)]
    state, m = e.tell_all(state, acts, fit)
    assert float(m["best_fitness"]) == pytest.approx(1.5 * (e.P - 1))          # mean over the graphs
    assert [int(r.size) for r in state.replay] == [e.P + e.k] * 2
    with pytest.raises(ValueError, match="ask is for one problem; this EGRL has 2"):
        e.ask(state)


def test_clear_errors():
    with pytest.raises(ValueError, match="EGRL maps whole layer graphs of MemoryPlacement-v0; --env.name "
                                         "DevicePlacement-v0 is not supported"):
        make_agent("egrl", tiny_config().controller, False, task=make_task(_cfg("DevicePlacement-v0")))
    with pytest.raises(ValueError, match="model_based: needs the outcome model"):
        make_agent("egrl", tiny_config().controller, True, task=make_task(_cfg()), dream=None)


def test_model_based_generations_use_the_loops_outcome_model(task):
    """train_imagined: the population's fitness is the outcome model's score of its mappings
    (params passed in traced, as the loop refits them); no real step."""
    from types import SimpleNamespace

    from controllers.agents import Imagination
    from controllers.mapping import ModelFitness
    from worldmodels.dream import DreamParams
    from worldmodels.episodes import episodes_to_replay
    from worldmodels.outcome import OutcomeConfig
    from worldmodels.outcome_online import OnlineOutcome, final_placements

    data = Collector(task, 2).collect(jax.random.key(0), task.episode_steps)
    meta = {"env_id": "MemoryPlacement-v0", "graphs": task.train, "kind": task.kind, "seed": 0, "num_rules": 0,
            "env_kwargs": task.env_kwargs}
    ps = final_placements(episodes_to_replay(data.records, meta, 2), *task.capacity())
    oo = OnlineOutcome(task.outcome_layout(), OutcomeConfig(width=8, members=1), *task.capacity())
    params = oo.init(jax.random.key(0), jax.tree.map(lambda x: x[:1], ps.placed), ps.reward)["params"]
    agent = make_agent("egrl", task.cfg.controller, True, task=task, dream=SimpleNamespace(outcome=oo.model))
    state = agent.init(jax.random.key(0), jax.tree.map(lambda x: x[0], stack_observations(
        [task.graph_obs(task.make_env(["squeezenet"]).reset(seed=0)[0])])))
    (acts,), _ = agent.egrl.ask_all(state)
    want = ModelFitness(oo.model, params, *task.capacity(), task.make_env(["squeezenet"]).reset(seed=0)[0])(acts)
    state, m = agent.train_imagined(state, Imagination(None, DreamParams(None, 0, params), None, 0, 1),
                                    jax.random.key(1))
    P = agent.egrl.P
    assert float(state.fitness[0]) == pytest.approx(want[:P].max(), rel=1e-5)
    assert m["imagined/episode_return"] == pytest.approx(want[:P].mean(), rel=1e-5)
    assert int(state.generation) == 1


def test_model_based_collection_plays_several_population_rows():
    """controller.egrl.collect_rows R: collection (not greedy) in environment i plays row i mod R;
    validation (greedy) plays the champion everywhere."""
    from types import SimpleNamespace

    from worldmodels.outcome import OutcomeConfig, OutcomeModel

    task = make_task(replace_path(_cfg(), {"controller.egrl.collect_rows": 3}))
    outcome = OutcomeModel(cfg=OutcomeConfig(width=8, members=1), layout=task.outcome_layout())
    agent = make_agent("egrl", task.cfg.controller, True, task=task, dream=SimpleNamespace(outcome=outcome))
    o, _ = task.make_env(["squeezenet"]).reset(seed=0)
    obs = stack_observations([task.graph_obs(o)] * 4)
    state = agent.init(jax.random.key(0), jax.tree.map(lambda x: x[0], obs))
    one = jax.tree.map(lambda x: x[0], obs)
    rows = [int(agent._row_policy(state, one, r)[0]) for r in range(3)]
    assert len(set(rows)) > 1                                     # the rows differ (random initial GNNs)
    got = np.asarray(agent.act(state, obs, jax.random.key(0), False)[0]).tolist()
    assert got == [rows[0], rows[1], rows[2], rows[0]]
    assert np.asarray(agent.act(state, obs, jax.random.key(0), True)[0]).tolist() == [rows[0]] * 4
    with pytest.raises(ValueError, match="collect_rows must be >= 1"):
        make_agent("egrl", task.cfg.controller, False,
                   task=make_task(replace_path(_cfg(), {"controller.egrl.collect_rows": 0})))


def test_measured_mappings_are_the_replays_finished_episodes(task):
    """Every terminated episode of the loop's replay, keyed by its graph and action sequence,
    replays in a fresh environment to the reward it is stored with."""
    from worldmodels.episodes import episodes_to_replay
    from worldmodels.outcome_online import measured_mappings

    data = Collector(task, 2).collect(jax.random.key(0), task.episode_steps)
    meta = {"env_id": "MemoryPlacement-v0", "graphs": task.train, "kind": task.kind, "seed": 0, "num_rules": 0,
            "env_kwargs": task.env_kwargs}
    got = measured_mappings(episodes_to_replay(data.records, meta, 2))
    assert list(got) == ["squeezenet"] and len(got["squeezenet"]) == 2
    for acts, reward in got["squeezenet"].items():
        assert len(acts) == task.episode_steps
        env = task.make_env(["squeezenet"])
        env.reset(seed=0)
        for a in acts:
            _, r, te, tr, _ = env.step(a)
        assert te and r == pytest.approx(reward, rel=1e-6)


def test_measured_fitness_replaces_the_models_score_of_a_played_mapping(task):
    """controller.egrl.measured_fitness: a mapping in ``Imagination.measured`` scores its
    measured reward (here one far above any prediction, so its individual becomes the
    champion); without the option the same measured dict is ignored."""
    from types import SimpleNamespace

    from controllers.agents import Imagination
    from worldmodels.dream import DreamParams
    from worldmodels.outcome import OutcomeConfig
    from worldmodels.outcome_online import OnlineOutcome

    oo = OnlineOutcome(task.outcome_layout(), OutcomeConfig(width=8, members=1), *task.capacity())
    o, _ = task.make_env(["squeezenet"]).reset(seed=0)
    obs = jax.tree.map(lambda x: x[0], stack_observations([task.graph_obs(o)]))
    results = {}
    for on in (True, False):
        t = make_task(replace_path(task.cfg, {"controller.egrl.measured_fitness": on}))
        agent = make_agent("egrl", t.cfg.controller, True, task=t, dream=SimpleNamespace(outcome=oo.model))
        assert agent.reads_measured is on
        state = agent.init(jax.random.key(0), obs)
        (acts,), _ = agent.egrl.ask_all(state)
        row = np.asarray(acts)[3]
        measured = {"squeezenet": {tuple(row.tolist()): 1000.0}}
        params = _outcome_params(oo, t)
        state, m = agent.train_imagined(state, Imagination(None, DreamParams(None, 0, params), None, 0, 1,
                                                           measured=measured), jax.random.key(1))
        results[on] = (state, m, row)
    state, m, row = results[True]
    assert float(state.fitness[0]) == 1000.0
    assert m["controller/measured_fraction"] == pytest.approx(1 / (agent.egrl.P + agent.egrl.k))
    state, m, _ = results[False]
    assert float(state.fitness[0]) < 1000.0 and "controller/measured_fraction" not in m


def _outcome_params(oo, task):
    from worldmodels.episodes import episodes_to_replay
    from worldmodels.outcome_online import final_placements

    data = Collector(task, 2).collect(jax.random.key(0), task.episode_steps)
    meta = {"env_id": "MemoryPlacement-v0", "graphs": task.train, "kind": task.kind, "seed": 0, "num_rules": 0,
            "env_kwargs": task.env_kwargs}
    ps = final_placements(episodes_to_replay(data.records, meta, 2), *task.capacity())
    return oo.init(jax.random.key(0), jax.tree.map(lambda x: x[:1], ps.placed), ps.reward)["params"]
