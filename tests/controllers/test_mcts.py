"""MCTS (`controllers.mcts`) with a perfect model recovers the optimum of a small exhaustive
problem, respects masks, and its principal variation is a legal path."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from controllers.base import TimeStep
from controllers.mcts import MCTS, principal_variation

A, H = 3, 4  # candidate actions (+ stop = A), steps per episode


class TreeProblem:
    """An exact model of a small rewriting-like problem: the state is the sequence of actions
    taken (one integer code), each (state, action) has a fixed reward (some negative, with
    traps where the best immediate reward leads to a poor subtree) and a fixed legality;
    stop (action A) pays 0 and ends the episode; the episode is truncated after H steps."""

    def __init__(self, seed: int):
        rng = np.random.default_rng(seed)
        n_codes = sum((A + 1) ** d for d in range(H + 1)) * (A + 1)
        self.reward = jnp.asarray(rng.normal(0.0, 1.0, (n_codes, A)), jnp.float32)
        legal = rng.random((n_codes, A)) < 0.75
        self.legal = jnp.asarray(np.concatenate([legal, np.ones((n_codes, 1), bool)], 1))
        self.params = (self.reward, self.legal)   # the model's "parameters": one compile for every seed

    @staticmethod
    def obs(params, code, t):
        mask = params[1][code] & jnp.where(t < H, True, jnp.arange(A + 1) == A)
        return {"code": jnp.asarray(code, jnp.int32), "t": jnp.asarray(t, jnp.int32),
                "action_mask": mask.astype(jnp.int8)}

    @staticmethod
    def reset(params, key, obs):
        s = (jnp.asarray(obs["code"], jnp.int32), jnp.asarray(obs["t"], jnp.int32))
        return s, TimeStep(TreeProblem.obs(params, *s), jnp.float32(0.0), jnp.bool_(False), jnp.bool_(False))

    @staticmethod
    def step(params, s, action, key):
        code, t = s
        stop = action == A
        r = jnp.where(stop, 0.0, params[0][code, jnp.minimum(action, A - 1)])
        code2, t2 = code * (A + 1) + action + 1, t + 1
        return (code2, t2), TimeStep(TreeProblem.obs(params, code2, t2), r.astype(jnp.float32), stop,
                                     (t2 >= H) & ~stop)

    def optimum(self) -> float:
        """Best return over every legal action sequence (exhaustive)."""
        best, reward, legal = 0.0, np.asarray(self.reward), np.asarray(self.legal)
        for n in range(1, H + 1):
            for seq in itertools.product(range(A), repeat=n):
                code, ret = 0, 0.0
                for a in seq:
                    if not legal[code, a]:
                        break
                    ret += float(reward[code, a])
                    code = code * (A + 1) + a + 1
                else:
                    best = max(best, ret)
        return best

    def greedy_return(self) -> float:
        code, ret = 0, 0.0
        for _ in range(H):
            r = np.where(np.asarray(self.legal[code, :A]), np.asarray(self.reward[code]), -np.inf)
            a = int(np.argmax(r))
            if r[a] <= 0:
                break
            ret += float(r[a])
            code = code * (A + 1) + a + 1
        return ret


def _uniform_prior(params, obs):
    return jnp.zeros(A + 1), jnp.float32(0.0)


def _closed_loop(mcts, prob, seed):
    """Play one real episode of ``prob``, searching again at every real state."""
    state = mcts.init(jax.random.key(0), prob.obs(prob.params, 0, 0))
    state = state.replace(model_params=prob.params)
    key = jax.random.key(seed)
    s, ts = prob.reset(prob.params, key, prob.obs(prob.params, 0, 0))
    ret = 0.0
    for _ in range(H):
        key, k = jax.random.split(key)
        a = int(mcts.act(state, ts.observation, k))
        assert int(ts.observation["action_mask"][a]) == 1
        s, ts = prob.step(prob.params, s, jnp.int32(a), k)
        ret += float(ts.reward)
        if bool(ts.terminated) or bool(ts.truncated):
            break
    return ret


def test_mcts_with_a_perfect_model_finds_the_optimum():
    """Four random problems (three with a trap that the myopic choice falls into); the full
    tree has 1 + 3 + 9 + 27 + 81 nodes below stops, searched with 400 simulations."""
    mcts = MCTS(TreeProblem.reset, TreeProblem.step, _uniform_prior, num_simulations=400)
    traps = 0
    for seed in range(4):
        prob = TreeProblem(seed)
        opt = prob.optimum()
        traps += prob.greedy_return() < opt - 1e-6
        assert _closed_loop(mcts, prob, seed) == pytest.approx(opt, abs=1e-5), seed
    assert traps >= 2


@pytest.mark.parametrize("method", ["muzero", "gumbel"])
def test_search_respects_the_root_mask_and_the_principal_variation_is_legal(method):
    prob = TreeProblem(1)
    mcts = MCTS(TreeProblem.reset, TreeProblem.step, _uniform_prior, model_params=prob.params,
                num_simulations=64, method=method, max_considered=A + 1)
    obs = prob.obs(prob.params, 0, 0)
    obs = {**obs, "action_mask": obs["action_mask"].at[0].set(0)}   # forbid action 0 at the root
    st = mcts.init(jax.random.key(0), obs)
    batch = jax.tree.map(lambda x: x[None], obs)
    action, value, visits, tree = mcts.search(st, batch, jax.random.key(1))
    assert int(action[0]) != 0 and int(visits[0, 0]) == 0
    acts, ok = principal_variation(tree, H)
    assert bool(ok[0, 0]) and int(acts[0, 0]) == int(action[0])
    code = 0
    for a, v in zip(np.asarray(acts[0]), np.asarray(ok[0])):
        if not v or a == A:
            break
        assert bool(prob.legal[code, a])
        code = code * (A + 1) + int(a) + 1


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="num_simulations"):
        MCTS(TreeProblem.reset, TreeProblem.step, _uniform_prior, num_simulations=0)
    with pytest.raises(ValueError, match="method"):
        MCTS(TreeProblem.reset, TreeProblem.step, _uniform_prior, method="alphago")
    with pytest.raises(ValueError, match="select"):
        MCTS(TreeProblem.reset, TreeProblem.step, _uniform_prior, select="mean")
