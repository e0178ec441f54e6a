"""CMA-ES: minimises a known function via evosax; improves a toy controller's return."""
import jax
import jax.numpy as jnp
from evosax.algorithms import CMA_ES

from controllers import make_controller
from controllers.cmaes import CMAESController
from controllers.toy_envs import GraphBandit


def test_evosax_cma_es_minimises_rosenbrock():
    dim = 6
    es = CMA_ES(population_size=16, solution=jnp.zeros(dim))
    params = es.default_params
    key = jax.random.PRNGKey(0)
    state = es.init(key, jnp.full(dim, -1.0), params)

    def rosen(x):
        return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)

    @jax.jit
    def gen(state, key):
        k1, k2 = jax.random.split(key)
        pop, state = es.ask(k1, state, params)
        return es.tell(k2, pop, jax.vmap(rosen)(pop), state, params)

    start = float(rosen(jnp.full(dim, -1.0)))
    for k in jax.random.split(key, 400):
        state, m = gen(state, k)
    assert float(m["best_fitness"]) < 1e-3 * start, (start, float(m["best_fitness"]))


def test_cmaes_controller_improves_toy_return():
    env = GraphBandit()
    ctrl = CMAESController(popsize=12, sigma=0.5, num_rollouts=8, horizon=env.horizon)
    _, ts = env.reset(None, jax.random.PRNGKey(0))
    state = ctrl.init(jax.random.PRNGKey(1), ts.observation)
    starts = jnp.zeros((1,))
    fitness = jax.jit(ctrl.make_fitness(env.reset, env.step, None, starts))
    eval_key = jax.random.PRNGKey(99)
    eval_ret = lambda p: float(jax.vmap(fitness, in_axes=(None, 0))(p, jax.random.split(eval_key, 32)).mean())
    before = eval_ret(state.params)
    step = ctrl.make_train_step(fitness)
    for k in jax.random.split(jax.random.PRNGKey(2), 25):
        state, metrics = step(state, k)
    after = eval_ret(state.params)
    assert after > before + 0.3, (before, after)
    # act never picks an illegal action
    obs = dict(ts.observation)
    obs["action_mask"] = jnp.array([0, 0, 1, 0, 1], jnp.int8)
    assert int(ctrl.act(state, obs, jax.random.PRNGKey(0))) in (2, 4)


def test_registry_cmaes():
    from worldmodels.config import CMAESConfig, ControllerConfig
    c = make_controller("cmaes", ControllerConfig(cmaes=CMAESConfig(popsize=6)))
    assert isinstance(c, CMAESController) and c.popsize == 6
