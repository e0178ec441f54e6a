"""Unit tests of the loop's pieces on the placement environments: tasks, the collector, the
replay writer, the agent registry, the clocks, the outcome model fed by the loop's replay."""
import jax
import numpy as np
import pytest

from controllers.agents import make_agent
from controllers.base import stack_observations
from worldmodels.collector import Collector
from worldmodels.config import parse_args, replace_path, tiny_config
from worldmodels.episodes import add_bounded, episodes_to_replay
from worldmodels.loop import Every, Since, steps_per_iteration
from worldmodels.tasks import make_task


def _cfg(env, graph="squeezenet", heldout=""):
    return replace_path(tiny_config(), {"env.name": env, "env.graph": graph, "env.heldout": heldout,
                                        "env.device.anneal_iters": 20})


def _meta(task, cfg):
    return {"env_id": cfg.env.name, "graphs": task.train, "kind": task.kind, "seed": 0, "num_rules": 0,
            "env_kwargs": task.env_kwargs}


@pytest.mark.parametrize("env", ["DevicePlacement-v0", "MemoryPlacement-v0"])
def test_collector_records_whole_placement_episodes(env):
    cfg = _cfg(env)
    task = make_task(cfg)
    col = Collector(task, 2)
    T = task.episode_steps + 2
    data = col.collect(jax.random.key(0), T)
    assert data.steps == 2 * T
    finished = [r for r in data.records if r.terms and r.terms[-1]]
    assert len(finished) >= 2 and all(len(r.actions) == task.episode_steps for r in finished)
    for r in data.records:
        assert len(r.states) == len(r.actions) + 1
        assert all(s["action_mask"].shape == (task.num_slots + 1,) and s["action_mask"][-1] == 0 for s in r.states)
    # the only non-zero reward is the last one, and the task's metric of the episode is it
    # (speedup rewards on a valid placement)
    for r in finished:
        assert all(x == 0 for x in r.rewards[:-1]) and r.rewards[-1] > 0
    np.testing.assert_allclose(sorted(data.returns), sorted(r.rewards[-1] for r in finished))
    # same key, same episodes
    again = col.collect(jax.random.key(0), T)
    assert [r.actions for r in again.records] == [r.actions for r in data.records]
    replay = episodes_to_replay(data.records, _meta(task, cfg), 4)
    assert replay.num_slots == task.num_slots and replay.num_episodes == len(data.records)
    bounded = add_bounded(replay, replay, 3)
    assert bounded.num_episodes == 3


def test_graph_observations_share_one_capacity_across_instances():
    task = make_task(_cfg("DevicePlacement-v0", "squeezenet,bert", "vit"))
    n_cap, m_cap = task.capacity()
    shapes = set()
    for g in ("squeezenet", "bert", "vit"):
        env = task.make_env([g])
        o, info = env.reset(seed=0)
        assert info["graph"] == g
        go = task.graph_obs(o)
        shapes.add((go["node_features"].shape, go["senders"].shape))
        assert int(go["n_node"][0]) < n_cap
    assert len(shapes) == 1


def test_device_baselines_and_metric_are_in_the_same_units():
    task = make_task(_cfg("DevicePlacement-v0"))
    base = task.baselines("squeezenet")
    assert set(base) == {"single", "expert", "metis", "etf", "anneal"}
    assert base["single"]["speedup"] == pytest.approx(1.0)
    assert base["anneal"]["speedup"] >= base["etf"]["speedup"] - 1e-9  # annealing starts from the best heuristic
    env = task.make_env(["squeezenet"])
    o, first = env.reset(seed=0)
    done, ret = False, 0.0
    while not done:
        o, r, te, tr, info = env.step(0)
        ret += r
        done = te or tr
    assert task.episode_metric(first, info, ret) == pytest.approx(ret)  # all on device 0 = a single device


def test_memory_baselines_include_the_compiler_default():
    task = make_task(_cfg("MemoryPlacement-v0"))
    base = task.baselines("squeezenet")
    assert base["all_slowest"]["speedup"] == 1.0 and base["compiler_default"]["speedup"] > 1.0


def test_unknown_environment_and_netlist_are_clear_errors():
    with pytest.raises(ValueError, match="unknown environment 'DevicePlacment-v0'.*did you mean DevicePlacement-v0"):
        make_task(_cfg("DevicePlacment-v0"))
    with pytest.raises(ValueError, match="unknown netlist 'squeezenet' for MacroPlacement-v0"):
        make_task(_cfg("MacroPlacement-v0"))


def test_agent_registry_errors():
    cfg = tiny_config()
    with pytest.raises(ValueError, match=r"--controller.name: unknown training-loop controller 'pppo' "
                                         r"\(known: .*egrl.*\); did you mean ppo"):
        make_agent("pppo", cfg.controller, False)
    with pytest.raises(ValueError, match="greedy: this controller has no training-loop adapter"):
        make_agent("greedy", cfg.controller, False)
    with pytest.raises(ValueError, match="needs a world model"):
        make_agent("planner", cfg.controller, False)


def test_behaviour_cloning_of_the_device_hint():
    cfg = replace_path(_cfg("DevicePlacement-v0", "squeezenet"), {"env.device.hint": "etf", "env.device.groups": 16})
    task = make_task(cfg)
    raw, actions = task.demonstrations()
    assert len(raw) == len(actions) == task.episode_steps and set(actions) == {0}
    obs = stack_observations([task.graph_obs(r) for r in raw])
    agent = make_agent("ppo", cfg.controller, False)
    state = agent.init(jax.random.key(0), jax.tree_util.tree_map(lambda x: x[0], obs))
    state, m = agent.clone(state, obs, np.asarray(actions), 100, 1e-2)
    after = agent.act(state, obs, jax.random.key(1), True)[0]
    assert m["bc/accuracy"] == 1.0 and (after == 0).all() and m["bc/loss"] < 0.1
    with pytest.raises(ValueError, match="--loop.bc_steps: DevicePlacement-v0 has no demonstrations"):
        make_task(_cfg("DevicePlacement-v0")).demonstrations()
    with pytest.raises(ValueError, match="--loop.bc_steps: RandomAgent has no behaviour cloning"):
        make_agent("random", cfg.controller, False).clone(state, obs, np.asarray(actions), 1, 1e-2)
    with pytest.raises(ValueError, match="outcome model: DevicePlacement with a hint"):
        task.outcome_layout()


def test_env_name_selects_its_instances_unless_given():
    cfg = parse_args(["--preset", "tiny", "--env.name", "MemoryPlacement-v0"])
    assert cfg.env.graph == "squeezenet,resnet50,bert" and cfg.env.heldout == "inception_v3,vit"
    cfg = parse_args(["--env.graph", "bert", "--env.name", "DevicePlacement-v0", "--env.device.groups", "8"])
    assert cfg.env.graph == "bert" and cfg.env.heldout == "nasnet_a,resnext50,vit" and cfg.env.device.groups == 8
    assert parse_args([]).env.graph == "squeezenet,bert"  # the main job is unchanged


def test_placement_iterations_hold_a_whole_episode():
    cfg = replace_path(_cfg("MemoryPlacement-v0"), {"controller.ppo.rollout_len": 8, "controller.ppo.num_minibatches": 4})
    task = make_task(cfg)
    T = steps_per_iteration(cfg, task)
    assert T >= task.episode_steps and T % 4 == 0
    assert steps_per_iteration(tiny_config(), make_task(tiny_config())) == tiny_config().controller.ppo.rollout_len


def test_clocks():
    e = Every(32, 100)
    assert e.due(16)
    e.fire(16)
    assert not e.due(24) and e.due(32) and e.due(100)
    s = Since(16, 100, 0)
    assert not s.due(8) and s.due(16)
    s.fire(16)
    assert not s.due(24) and s.due(100)


def test_outcome_model_trained_on_the_loops_replay_ranks_placements():
    from worldmodels.outcome import OutcomeConfig, predict
    from worldmodels.outcome_online import OnlineOutcome, final_placements
    cfg = _cfg("DevicePlacement-v0", "squeezenet,bert")
    task = make_task(cfg)
    data = Collector(task, 4).collect(jax.random.key(1), 4 * task.episode_steps)
    replay = episodes_to_replay(data.records, _meta(task, cfg), 4)
    ps = final_placements(replay, *task.capacity())
    assert len(ps.reward) >= 8 and (ps.reward > 0).all()
    oo = OnlineOutcome(task.outcome_layout(), OutcomeConfig(width=16, members=2, batch_size=16), *task.capacity())
    state = oo.init(jax.random.key(0), jax.tree.map(lambda x: x[:1], ps.placed), ps.reward)
    state, m0 = oo.train(state, ps, 1, np.random.default_rng(0))
    state, m = oo.train(state, ps, 100, np.random.default_rng(1))
    assert np.isfinite(m["outcome/loss"]) and m["outcome/mse"] < m0["outcome/mse"]
    pred = predict(oo.model, state["params"], ps.placed)
    assert np.corrcoef(pred, ps.reward)[0, 1] > 0.5


def test_greedy_demonstrations_and_the_gain_prior_on_rewriting():
    """GraphRewrite-v0's demonstrations are greedy's episode (largest candidate_reward, stop
    once none is positive; here truncated at 12 steps); a policy with a large gain prior already picks a candidate of the
    largest reward; minibatched cloning (batch < N) lowers the demonstrations' loss."""
    cfg = replace_path(_cfg("GraphRewrite-v0", "squeezenet"), {"env.max_steps": 12})
    task = make_task(cfg)
    raw, actions = task.demonstrations()
    stop = len(raw[0]["action_mask"]) - 1
    assert stop not in actions[:-1] and len(actions) > 5
    for o, a in zip(raw[:-1], actions[:-1]):
        r = np.where(np.asarray(o["action_mask"][:stop]) > 0, o["candidate_reward"], -np.inf)
        assert r[a] == r.max() > 0
    if actions[-1] == stop:    # greedy stopped: no candidate gains (else the episode was truncated)
        last = np.asarray(raw[-1]["candidate_reward"])[np.asarray(raw[-1]["action_mask"][:stop]) > 0]
        assert last.size == 0 or last.max() <= 0
    obs = stack_observations([task.graph_obs(r) for r in raw])
    one = jax.tree_util.tree_map(lambda x: x[0], obs)
    prior = make_agent("ppo", replace_path(cfg, {"controller.ppo.gain_prior": 50.0}).controller, False)
    picks = prior.act(prior.init(jax.random.key(0), one), obs, jax.random.key(1), True)[0]
    for o, p in zip(raw[:-1], picks[:-1]):
        assert o["candidate_reward"][p] == np.max(np.where(np.asarray(o["action_mask"][:stop]) > 0,
                                                           o["candidate_reward"], -np.inf))
    agent = make_agent("ppo", cfg.controller, False)
    state = agent.init(jax.random.key(0), one)
    _, before = agent.clone(state, obs, np.asarray(actions), 0, 1e-2, batch=4)
    _, after = agent.clone(state, obs, np.asarray(actions), 60, 1e-2, batch=4)
    assert after["bc/loss"] < 0.5 * before["bc/loss"] and after["bc/accuracy"] > before["bc/accuracy"]
    with pytest.raises(ValueError, match="--loop.bc_batch must be >= 1"):
        agent.clone(state, obs, np.asarray(actions), 1, 1e-2, batch=0)


def test_rewrite_env_cost_selects_the_cost_model_of_reward_and_baselines(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("SYSWORLD_CACHE_DIR", str(tmp_path))
    cfg = replace_path(tiny_config(), {"env.graph": "squeezenet", "env.heldout": "", "env.cost": "ort-cpu"})
    task = make_task(cfg)
    env = task.make_env(["squeezenet"]).unwrapped
    assert env.cost_model.name == "ort-cpu" and task._e0.cost_model.name == "ort-cpu"
    _, info = env.reset(seed=0)
    assert info["cost_ms"] == pytest.approx(env.cost_model.graph_cost(env.graph))   # ms measured on this CPU
    b = task.baselines("squeezenet")
    assert set(b) == {"greedy", "backtracking"} and b["greedy"]["cost_reduction"] >= 0.0
    assert make_task(replace_path(cfg, {"env.cost": "v100"}))._e0.cost_model.name == "v100"
