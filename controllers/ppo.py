"""PPO with masked discrete actions over graph observations (PureJaxRL-style update).

- policy: :class:`controllers.networks.GraphPolicyValue`; illegal actions get logit
  ``NEG_INF`` so sampling and argmax never choose them;
- ``update(state, batch)``: GAE (bootstrapping from ``next_value`` on truncation, not on
  termination), clipped surrogate, clipped value loss, entropy bonus, gradient clipping;
  a single jitted function: ``lax.scan`` over epochs, and inside over shuffled minibatches.

A batch is a :class:`controllers.rollout.Transition` with leading dims [T, B]; the same
format comes from a real env (:func:`controllers.rollout.collect_real`) or an imagined
one (:func:`controllers.rollout.collect_imagined`).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from controllers.base import get_mask, masked_logits, register_controller, section_kwargs
from controllers.networks import GraphPolicyValue


@struct.dataclass
class PPOState:
    params: Any
    opt_state: Any
    step: jax.Array  # int32 [], number of updates so far


def gae(reward, value, next_value, terminated, done, gamma, lam):
    """Generalised advantage estimates. All args [T, B]; returns (advantages, targets)."""
    delta = reward + gamma * next_value * (1.0 - terminated) - value

    def body(carry, xs):
        d, dn = xs
        adv = d + gamma * lam * (1.0 - dn) * carry
        return adv, adv

    _, adv = jax.lax.scan(body, jnp.zeros_like(reward[0]), (delta, done), reverse=True)
    return adv, adv + value


class PPO:
    def __init__(self, lr: float = 3e-4, gamma: float = 0.99, gae_lambda: float = 0.95,
                 clip_eps: float = 0.2, ent_coef: float = 0.01, vf_coef: float = 0.5,
                 max_grad_norm: float = 0.5, num_epochs: int = 4, num_minibatches: int = 4,
                 rollout_len: int = 32, hidden: int = 64, message_steps: int = 2,
                 num_rules: int = 256, gain_prior: float = 0.0):
        self.gamma, self.gae_lambda, self.clip_eps = gamma, gae_lambda, clip_eps
        self.ent_coef, self.vf_coef = ent_coef, vf_coef
        self.num_epochs, self.num_minibatches, self.rollout_len = num_epochs, num_minibatches, rollout_len
        self.net = GraphPolicyValue(hidden=hidden, message_steps=message_steps, num_rules=num_rules,
                                    gain_prior=gain_prior)
        self.num_rules = num_rules
        self.tx = optax.chain(optax.clip_by_global_norm(max_grad_norm), optax.adam(lr, eps=1e-5))
        self.update = jax.jit(self._update)
        self.act = jax.jit(self._act, static_argnames=("greedy",))
        self.policy_batch = jax.jit(jax.vmap(self.policy, in_axes=(None, 0, 0)))
        self.value_batch = jax.jit(jax.vmap(self.value, in_axes=(None, 0)))

    # ------------------------------------------------------------------ interface
    def init(self, key: jax.Array, example_obs: dict) -> PPOState:
        get_mask(example_obs)
        rules = jnp.asarray(example_obs.get("candidate_rule", jnp.zeros(0, jnp.int32)))  # placement: none
        if rules.size and int(rules.max()) >= self.num_rules:
            raise ValueError(f"observation has rule id {int(rules.max())} >= ppo.num_rules={self.num_rules}")
        params = self.net.init(key, example_obs)
        return PPOState(params=params, opt_state=self.tx.init(params), step=jnp.zeros((), jnp.int32))

    def distribution(self, params, obs) -> tuple[jax.Array, jax.Array]:
        """(masked log-probabilities [A+1], value []) for one observation."""
        logits, value = self.net.apply(params, obs)
        return jax.nn.log_softmax(masked_logits(logits, get_mask(obs))), value

    def policy(self, state: PPOState, obs, key) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Sample: (action int32 [], log_prob [], value []) for one observation."""
        logp, value = self.distribution(state.params, obs)
        action = jax.random.categorical(key, logp).astype(jnp.int32)
        return action, logp[action], value

    def value(self, state: PPOState, obs) -> jax.Array:
        return self.net.apply(state.params, obs)[1]

    def _act(self, state: PPOState, obs, key, greedy: bool = False) -> jax.Array:
        logp, _ = self.distribution(state.params, obs)
        if greedy:
            return jnp.argmax(logp).astype(jnp.int32)
        return jax.random.categorical(key, logp).astype(jnp.int32)

    # ------------------------------------------------------------------ learning
    def _loss(self, params, mb):
        logp_all, value = jax.vmap(self.distribution, in_axes=(None, 0))(params, mb["obs"])
        logp = jnp.take_along_axis(logp_all, mb["action"][:, None], axis=1)[:, 0]
        ratio = jnp.exp(logp - mb["log_prob"])
        adv = (mb["adv"] - mb["adv"].mean()) / (mb["adv"].std() + 1e-8)
        pg = -jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - self.clip_eps, 1 + self.clip_eps) * adv).mean()
        v_clip = mb["value"] + jnp.clip(value - mb["value"], -self.clip_eps, self.clip_eps)
        vf = 0.5 * jnp.maximum((value - mb["target"]) ** 2, (v_clip - mb["target"]) ** 2).mean()
        probs = jnp.exp(logp_all)
        entropy = -(probs * jnp.where(probs > 0, logp_all, 0.0)).sum(-1).mean()
        loss = pg + self.vf_coef * vf - self.ent_coef * entropy
        approx_kl = ((ratio - 1) - (logp - mb["log_prob"])).mean()
        return loss, {"loss": loss, "policy_loss": pg, "value_loss": vf, "entropy": entropy,
                      "approx_kl": approx_kl, "clip_frac": (jnp.abs(ratio - 1) > self.clip_eps).mean()}

    def _update(self, state: PPOState, batch) -> tuple[PPOState, dict]:
        f32 = lambda x: jnp.asarray(x, jnp.float32)
        term = f32(batch.terminated)
        done = jnp.maximum(term, f32(batch.truncated))
        adv, target = gae(f32(batch.reward), f32(batch.value), f32(batch.next_value), term, done,
                          self.gamma, self.gae_lambda)
        T, B = batch.reward.shape
        n = T * B
        if n % self.num_minibatches:
            raise ValueError(f"ppo: batch of {T}x{B}={n} transitions is not divisible by num_minibatches={self.num_minibatches}")
        flat = jax.tree_util.tree_map(lambda x: x.reshape((n,) + x.shape[2:]), {
            "obs": batch.obs, "action": batch.action.astype(jnp.int32), "log_prob": f32(batch.log_prob),
            "value": f32(batch.value), "adv": adv, "target": target})
        mbs = n // self.num_minibatches
        key = jax.random.fold_in(jax.random.PRNGKey(0), state.step)

        def minibatch(carry, mb):
            params, opt_state = carry
            grads, metrics = jax.grad(self._loss, has_aux=True)(params, mb)
            updates, opt_state = self.tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), metrics

        def epoch(carry, k):
            perm = jax.random.permutation(k, n)
            shuffled = jax.tree_util.tree_map(
                lambda x: x[perm].reshape((self.num_minibatches, mbs) + x.shape[1:]), flat)
            return jax.lax.scan(minibatch, carry, shuffled)

        (params, opt_state), metrics = jax.lax.scan(
            epoch, (state.params, state.opt_state), jax.random.split(key, self.num_epochs))
        metrics = jax.tree_util.tree_map(jnp.mean, metrics)
        metrics["mean_advantage"] = adv.mean()
        metrics["mean_target"] = target.mean()
        return PPOState(params=params, opt_state=opt_state, step=state.step + 1), metrics


@register_controller("ppo")
def _make_ppo(cfg, **_):
    return PPO(**section_kwargs(cfg, "ppo"))
