"""The world model: encoder (V) + latent dynamics with heads (M), trained end to end.

    wm = WorldModel.create(cfg, kind, num_slots=A, num_rules=R)   # cfg: `WorldModelConfig`
    params = wm.init(key, replay)                       # also fits the reward normaliser
    trainer = Trainer(wm)                               # optax adam + global-norm clipping
    state = trainer.init(params)
    batch = make_train_batch(replay, starts, cfg.seq_len, buckets)
    state, metrics = trainer.step(state, batch, key)    # jitted; compiles once per bucket

Params: ``{"encoder", "dynamics", "norm": {"reward_mean", "reward_std"}}``. Reward targets
are normalised ``(r - mean) / std`` with the training data's statistics (rewrite rewards are
relative cost decreases of ~1e-3..1e-1); `denorm_reward` maps predictions back. The norm
leaves are used under ``stop_gradient`` so the optimizer never moves them.

Loss (one training example = a window of T = ``seq_len`` real steps starting at s_0): all
T+1 states are encoded with the shared encoder; the dynamics model starts from the latent of
s_0 and the slots of s_0 (`dynamics.heads` slot design) and is unrolled over the T real
actions (``unroll`` teacher / open), with targets: the encoder latents of s_1..s_T (stop
gradient, so the latent loss cannot collapse the encoder; all latents `standardise`d), normalised rewards, terminated
flags and the carried-slot legality ``next_mask`` (see `worldmodels.replay`). Gradients
reach the encoder through s_0's latent and slot embeddings.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dynamics import SlotDescription, feature_slots, make_dynamics, rewrite_slots
from dynamics.base import DynamicsModel
from encoders import make_encoder
from encoders.graphs import Buckets, batch_observations
from worldmodels.config import WorldModelConfig
from worldmodels.replay import REWRITE, Replay

sg = jax.lax.stop_gradient

#: ``model.mask_loss``: "all" trains the mask head on every carried slot (predicting which
#: candidates a rewrite removes is also an auxiliary signal for the reward); "residual" only
#: on slots the consumed-slot prior has not already decided (see `dynamics.base`)
MASK_LOSSES = ("all", "residual")


def standardise(z: jnp.ndarray, eps: float = 1e-5) -> jnp.ndarray:
    """Parameter-free layer norm over the last axis: the dynamics sees and predicts encoder
    latents of fixed scale, so its latent loss cannot be lowered or raised by rescaling."""
    mu = z.mean(-1, keepdims=True)
    return (z - mu) / jnp.sqrt(((z - mu) ** 2).mean(-1, keepdims=True) + eps)

#: counts traces of the jitted train step (tests check "no retracing within a bucket")
TRACE_COUNT = {"train_step": 0}

#: node / edge capacity buckets for training batches (few buckets = few compiles)
TRAIN_BUCKETS = Buckets(nodes=(512, 1024, 2048, 4096, 8192, 16384, 32768, 65536),
                        edges=(512, 1024, 2048, 4096, 8192, 16384, 32768, 65536))


class TrainBuckets(NamedTuple):
    """Capacities of a training batch's two graph batches: ``first`` for the B window starts
    s_0, ``rest`` for the B*T later states."""

    first: Buckets = TRAIN_BUCKETS
    rest: Buckets = TRAIN_BUCKETS


class TrainBatch(NamedTuple):
    """One training batch (NumPy) of B windows of T steps. graphs: padded GraphsTuple of the
    window starts s_0 (graph b = s_0 of window b; n_graph = B+1), the states gradients reach
    the encoder through; next_graphs: padded GraphsTuple of s_1..s_T (graph b*T + t-1 = s_t of
    window b; n_graph = B*T+1), encoded only as targets. Encoding them apart means the
    backward pass runs over the B starts, not all B*(T+1) states. cand_rule [B, A] /
    cand_nodes [B, A, K] of each s_0 (positions into graphs.nodes; zero-size for placement);
    action int32 [B, T]; reward / terminated / valid float32 [B, T]; next_mask float32 [B, T, A+1];
    cand_reward float32 [B, A], the immediate reward of each candidate of s_0 (zero-size for placement)."""

    graphs: Any
    next_graphs: Any
    cand_rule: np.ndarray
    cand_nodes: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    terminated: np.ndarray
    valid: np.ndarray
    next_mask: np.ndarray
    cand_reward: np.ndarray


def make_train_batch(replay: Replay, starts: np.ndarray, seq_len: int,
                     buckets: TrainBuckets = TrainBuckets()) -> TrainBatch:
    """Windows of ``seq_len`` steps starting at transitions ``starts`` [B] -> `TrainBatch`."""
    w = replay.windows(starts, seq_len)
    b = len(starts)
    obs = lambda idx: [replay.state_obs(int(i)) for i in idx.reshape(-1)]  # noqa: E731
    first = batch_observations(obs(w["state"][:, 0]), buckets.first, n_graph=b + 1)
    rest = batch_observations(obs(w["state"][:, 1:]), buckets.rest, n_graph=b * seq_len + 1)
    if replay.kind == REWRITE:
        rule, nodes, creward = first.candidate_rule, first.candidate_nodes, first.candidate_reward
    else:
        rule, nodes, creward = np.zeros((b, 0), np.int32), np.zeros((b, 0, 0), np.int32), np.zeros((b, 0), np.float32)
    f32 = lambda x: np.asarray(x, np.float32)  # noqa: E731
    return TrainBatch(first.graphs, rest.graphs, rule, nodes, w["action"].astype(np.int32), f32(w["reward"]),
                      f32(w["terminated"]), f32(w["valid"]), f32(w["next_mask"]), f32(creward))


@dataclasses.dataclass(frozen=True)
class WorldModel:
    """Encoder + dynamics (named by ``cfg.encoder`` / ``cfg.dynamics``) for one environment
    kind (``rewrite`` / ``placement``) with A slots."""

    cfg: WorldModelConfig
    kind: str
    num_slots: int
    num_rules: int
    encoder: Any
    dyn: DynamicsModel

    @classmethod
    def create(cls, cfg: WorldModelConfig, kind: str, num_slots: int, num_rules: int = 0) -> "WorldModel":
        dynamics = cfg.dynamics
        enc = make_encoder(cfg.encoder, width=cfg.width, depth=cfg.depth, latent_dim=cfg.latent_dim)
        common = dict(latent_dim=cfg.latent_dim, slot_width=cfg.slot_width, num_rules=num_rules,
                      mask_rank=cfg.mask_rank)
        if dynamics == "mdnrnn":
            extra = dict(hidden=cfg.hidden, n_mixtures=cfg.mixtures)
        elif dynamics == "ensemble":
            extra = dict(hidden=cfg.hidden, n_members=cfg.members)
        elif dynamics == "rssm":
            extra = dict(deter=cfg.hidden, hidden=cfg.hidden, stoch=cfg.stoch)
        else:
            extra = {}
        coefs = {"latent": cfg.latent_coef, "reward": cfg.reward_coef, "terminated": cfg.terminated_coef,
                 "mask": cfg.mask_coef, "kl": cfg.kl_coef}
        dyn = make_dynamics(dynamics, unroll=cfg.unroll, coefs=coefs, **common, **extra)
        if cfg.mask_loss not in MASK_LOSSES:
            raise ValueError(f"model.mask_loss must be one of {MASK_LOSSES}, got {cfg.mask_loss!r}")
        if kind not in (REWRITE, "placement"):
            raise ValueError(f"world model kind must be 'rewrite' or 'placement', got {kind!r}")
        return cls(cfg, kind, int(num_slots), int(num_rules), enc, dyn)

    @classmethod
    def for_replay(cls, cfg: WorldModelConfig, replay: Replay) -> "WorldModel":
        return cls.create(cfg, replay.kind, replay.num_slots, replay.meta.get("num_rules", 0))

    # ------------------------------------------------------------------ pieces
    def slots(self, node_emb: jnp.ndarray, cand_rule: jnp.ndarray, cand_nodes: jnp.ndarray,
              cand_reward: jnp.ndarray | None = None) -> SlotDescription:
        """Slot descriptions [B, A] from node embeddings [N, D] and s_0 candidate arrays
        (``cand_reward`` [B, A]: immediate rewards, used when ``cfg.slot_rewards``)."""
        b = cand_rule.shape[0]
        if self.kind == REWRITE:
            if cand_reward is None or not self.cfg.slot_rewards:
                cand_reward = jnp.zeros(cand_rule.shape, jnp.float32)
            return jax.vmap(rewrite_slots, (None, 0, 0, 0))(node_emb, cand_rule, cand_nodes, cand_reward)
        eye = jnp.eye(self.num_slots, dtype=jnp.float32)
        one = feature_slots(eye)
        return jax.tree.map(lambda x: jnp.broadcast_to(x, (b,) + x.shape), one)

    def encode(self, params, graphs, cand_rule, cand_nodes, num: int, cand_reward=None):
        """(latents [num, Z], slots [num, A]) of the first ``num`` graphs of a padded batch
        whose candidate arrays (already offset) are ``cand_rule`` [num, A], ``cand_nodes``,
        ``cand_reward`` [num, A] (None = zeros)."""
        node_emb, lat = self.encoder.apply(params["encoder"], graphs)
        return standardise(lat[:num]), self.slots(node_emb, cand_rule, cand_nodes, cand_reward)

    def normalise_reward(self, params, r):
        n = sg(params["norm"])
        return (r - n["reward_mean"]) / n["reward_std"]

    def denorm_reward(self, params, r):
        n = sg(params["norm"])
        return r * n["reward_std"] + n["reward_mean"]

    # ------------------------------------------------------------------ init / loss
    def init(self, key: jax.Array, replay: Replay) -> dict:
        """Parameters, built on one example window of ``replay``; reward statistics from it."""
        if replay.num_transitions == 0:
            raise ValueError("world model init: the replay store has no transitions")
        if replay.num_slots != self.num_slots:
            raise ValueError(f"world model has {self.num_slots} slots but the replay store has {replay.num_slots}")
        batch = make_train_batch(replay, np.zeros(1, np.int64), 1)

        @jax.jit  # eager Flax init dispatches op by op (tens of seconds); jitted it is one compile
        def init_fn(key, graphs, rule, nodes, creward):
            ke, kd = jax.random.split(key)
            enc_params = self.encoder.init(ke, graphs)
            node_emb, lat = self.encoder.apply(enc_params, graphs)
            slots = self.slots(node_emb, rule, nodes, creward)
            return enc_params, self.dyn.init(kd, standardise(lat[0]), jax.tree.map(lambda x: x[0], slots))

        enc_params, dyn_params = init_fn(key, batch.graphs, batch.cand_rule, batch.cand_nodes, batch.cand_reward)
        r = replay.reward.astype(np.float64)
        norm = {"reward_mean": jnp.float32(r.mean()), "reward_std": jnp.float32(max(r.std(), 1e-6))}
        return {"encoder": enc_params, "dynamics": dyn_params, "norm": norm}

    def loss(self, params, batch: TrainBatch, key: jax.Array):
        """(total loss, metrics) of one `TrainBatch` (see the module docstring)."""
        from dynamics import SequenceBatch

        b, t = batch.action.shape
        node_emb, lat0 = self.encoder.apply(params["encoder"], batch.graphs)
        _, lat_next = self.encoder.apply(sg(params["encoder"]), batch.next_graphs)   # targets: no gradient
        lat = jnp.concatenate([standardise(lat0[:b])[:, None],
                               sg(standardise(lat_next[: b * t]).reshape(b, t, -1))], axis=1)
        slots = self.slots(node_emb, batch.cand_rule, batch.cand_nodes, batch.cand_reward)
        if not (self.uses_prior and self.cfg.mask_loss == "residual"):
            slots = slots._replace(conflicts=None)   # no conflicts in the batch: mask loss on every slot
        seq = SequenceBatch(lat, slots, batch.action, self.normalise_reward(params, batch.reward),
                            batch.terminated, batch.next_mask, batch.valid)
        return self.dyn.loss(params["dynamics"], seq, key)

    # ------------------------------------------------------------------ imagination helpers
    def initial_carry(self, params, latent, slots: SlotDescription):
        return self.dyn.initial_carry(params["dynamics"], latent, slots)

    @property
    def uses_prior(self) -> bool:
        """The consumed-slot prior is on (rewriting with ``cfg.consumed_prior``)."""
        return self.kind == REWRITE and self.cfg.consumed_prior

    def legal_slots(self, mask_logits, consumed, threshold: float = 0.5):
        """bool [A+1]: the carried slots predicted legal, sigmoid(logit) > ``threshold``
        (compared in logit space). With ``consumed_prior`` (rewriting), consumed slots are
        illegal: applying (rule, nodes) rewrites those nodes, so that candidate and every
        candidate matching one of its nodes is gone (on collected data a candidate that
        shares no node with the applied one survived every time and one that does was gone
        98% of the time; tests/worldmodels/test_replay.py). The learned head predicts the rest."""
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"mask threshold must be in (0, 1), got {threshold}")
        legal = mask_logits > float(np.log(threshold / (1.0 - threshold)))
        if self.uses_prior:
            legal = legal & ~consumed
        return legal


# ----------------------------------------------------------------------------- training


class TrainState(NamedTuple):
    params: Any
    opt_state: Any
    step: jnp.ndarray


class Trainer:
    """optax Adam with global-norm clipping; `step` is jitted (one compile per bucket)."""

    def __init__(self, wm: WorldModel):
        self.wm = wm
        self.opt = optax.chain(optax.clip_by_global_norm(wm.cfg.grad_clip), optax.adam(wm.cfg.lr))
        self._step = jax.jit(self._step_impl)

    def init(self, params) -> TrainState:
        return TrainState(params, self.opt.init(params), jnp.zeros((), jnp.int32))

    def _step_impl(self, state: TrainState, batch: TrainBatch, key):
        TRACE_COUNT["train_step"] += 1
        (loss, metrics), grads = jax.value_and_grad(self.wm.loss, has_aux=True)(state.params, batch, key)
        updates, opt_state = self.opt.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = dict(metrics, grad_norm=optax.global_norm(grads))
        return TrainState(params, opt_state, state.step + 1), metrics

    def step(self, state: TrainState, batch: TrainBatch, key) -> tuple[TrainState, dict]:
        return self._step(state, batch, key)


def capacity_for(max_nodes: int, max_edges: int, graphs: int, quantum: int = 512) -> Buckets:
    """ONE (node, edge) capacity for ``graphs`` graphs of at most ``max_nodes`` nodes and
    ``max_edges`` edges each (plus jraph's padding node), rounded up to ``quantum``."""
    up = lambda x: -(-int(x) // quantum) * quantum  # noqa: E731
    return Buckets(nodes=(up(max_nodes * graphs + 1),), edges=(up(max(max_edges * graphs, 1)),))


def train_buckets(replay: Replay, cfg: WorldModelConfig) -> TrainBuckets:
    """ONE capacity per graph batch that holds any training batch of ``replay`` (the
    largest state times B, and times B*T): a single compile of the train step."""
    n, e = int(np.diff(replay.node_offset).max()), int(np.diff(replay.edge_offset).max())
    return TrainBuckets(capacity_for(n, e, cfg.batch_size), capacity_for(n, e, cfg.batch_size * cfg.seq_len))


def sample_starts(replay: Replay, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform random transition indices (window starts)."""
    return rng.integers(0, replay.num_transitions, size=batch_size)


def train(wm: WorldModel, params, replay: Replay, steps: int, seed: int = 0, callback=None,
          buckets: TrainBuckets | None = None, progress: bool = False, state: TrainState | None = None) -> tuple[TrainState, list[dict]]:
    """``steps`` optimisation steps on random windows of ``replay``; ``callback(i, metrics)``
    after each. Returns the final state and the per-step metrics (floats)."""
    from worldmodels.logging import progress as bar

    trainer = Trainer(wm)
    state = trainer.init(params) if state is None else state
    buckets = train_buckets(replay, wm.cfg) if buckets is None else buckets
    rng = np.random.default_rng(seed)
    key = jax.random.key(seed)
    history = []
    with bar(total=steps, desc="train", enabled=progress) as pbar:
        for i in range(steps):
            batch = make_train_batch(replay, sample_starts(replay, wm.cfg.batch_size, rng), wm.cfg.seq_len, buckets)
            key, k = jax.random.split(key)
            state, m = trainer.step(state, batch, k)
            m = {k_: float(v) for k_, v in m.items()}
            history.append(m)
            if callback is not None:
                callback(i, m)
            pbar.update(1)
    return state, history


# ----------------------------------------------------------------------------- checkpoints


def save_world_model(directory: str | os.PathLike, state: TrainState, config: Any, step: int | None = None,
                     compat_exclude: tuple[str, ...] = ("log", "loop")) -> int:
    """Write ``state`` (params, optimizer state, step) with orbax; returns the step saved.
    ``compat_exclude``: config fields allowed to differ at restore (see `worldmodels.checkpoint`)."""
    from worldmodels.checkpoint import Checkpointer

    ck = Checkpointer(directory, config=config, keep=2, compat_exclude=compat_exclude)
    step = int(state.step) if step is None else int(step)
    ck.save(step, {"params": state.params, "opt_state": state.opt_state, "step": state.step})
    ck.close()
    return step


def restore_world_model(directory: str | os.PathLike, like: TrainState, config: Any, step: int | None = None,
                        compat_exclude: tuple[str, ...] = ("log", "loop")) -> TrainState:
    """Restore a state saved by `save_world_model` into the structure of ``like``."""
    from worldmodels.checkpoint import Checkpointer

    ck = Checkpointer(directory, config=config, keep=2, compat_exclude=compat_exclude)
    try:
        tree, _ = ck.restore({"params": like.params, "opt_state": like.opt_state, "step": like.step}, step)
    finally:
        ck.close()
    return TrainState(tree["params"], tree["opt_state"], tree["step"])
