"""Checkpoints of an arbitrary pytree state with orbax (keep the last k).

What is saved: every leaf of the state (jax arrays incl. typed or raw PRNG keys, numpy
arrays such as replay buffers, Python/numpy scalars such as step counters, optimizer
states), plus JSON metadata: the config, a config hash, the tree structure, each leaf's
path, shape, dtype and kind (so a restore gives back the same Python types).

Safety:
- atomic: orbax writes each step into a temporary directory and renames it only when the
  write is complete, so a ``kill -9`` during a save leaves the previous steps intact (the
  partial temporary directory is never listed as a step);
- restoring from a checkpoint written with an incompatible config or a different state
  structure raises :class:`CheckpointError` naming the differing fields/leaves;
- an unreadable or incomplete step raises :class:`CheckpointError`; nothing is deleted.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from worldmodels.config import ADDED_FIELDS, flatten

#: config sections that may change between a save and a restore (resume with more steps,
#: another log directory) without making the checkpoint incompatible.
DEFAULT_COMPAT_EXCLUDE = ("log", "loop")


class CheckpointError(ValueError):
    """A checkpoint cannot be written or restored (one-line message)."""


def _flat_config(config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    if dataclasses.is_dataclass(config):
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in flatten(config).items()}
    if isinstance(config, Mapping):
        out: dict[str, Any] = {}
        for k, v in config.items():
            if isinstance(v, Mapping):
                out.update({f"{k}.{kk}": vv for kk, vv in _flat_config(v).items()})
            else:
                out[str(k)] = list(v) if isinstance(v, tuple) else v
        return out
    raise CheckpointError(f"checkpoint config must be a dataclass or a dict, got {type(config).__name__}")


def _compat_view(flat: Mapping[str, Any], exclude: Sequence[str]) -> dict[str, Any]:
    return {k: v for k, v in flat.items() if not any(k == p or k.startswith(p + ".") for p in exclude)}


def _compat_hash(flat: Mapping[str, Any], exclude: Sequence[str]) -> str:
    import hashlib

    blob = json.dumps(_compat_view(flat, exclude), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _encode_leaf(x: Any) -> tuple[Any, str]:
    """Return (array to store, kind tag)."""
    if isinstance(x, jax.Array):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.key_data(x), "key:" + str(jax.random.key_impl(x))
        return x, "jax"
    if isinstance(x, np.ndarray):
        return x, "numpy"
    if isinstance(x, bool):
        return np.asarray(x), "bool"
    if isinstance(x, int):
        return np.asarray(x, dtype=np.int64), "int"
    if isinstance(x, float):
        return np.asarray(x, dtype=np.float64), "float"
    if isinstance(x, np.generic):
        return np.asarray(x), "npscalar"
    raise CheckpointError(f"checkpoint: cannot save a leaf of type {type(x).__name__}")


def _decode_leaf(a: Any, kind: str) -> Any:
    if kind == "jax":
        return jax.numpy.asarray(a)
    if kind == "numpy":
        return np.asarray(a)
    if kind == "bool":
        return bool(np.asarray(a))
    if kind == "int":
        return int(np.asarray(a))
    if kind == "float":
        return float(np.asarray(a))
    if kind == "npscalar":
        return np.asarray(a)[()]
    if kind.startswith("key:"):
        impl = kind[4:]
        return jax.random.wrap_key_data(jax.numpy.asarray(a), impl=impl if impl in ("threefry2x32", "rbg", "unsafe_rbg") else None)
    raise CheckpointError(f"checkpoint: unknown leaf kind {kind!r}")


def _describe(state: Any) -> tuple[list[str], list[Any], list[dict], Any]:
    leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(state)
    paths, arrays, specs = [], [], []
    for path, leaf in leaves_with_path:
        arr, kind = _encode_leaf(leaf)
        paths.append(jax.tree_util.keystr(path))
        arrays.append(arr)
        specs.append({"shape": list(np.shape(arr)), "dtype": str(arr.dtype), "kind": kind})
    return paths, arrays, specs, treedef


class Checkpointer:
    """Save/restore a pytree state in ``directory`` keeping the last ``keep`` steps.

    ``config`` (a config dataclass or dict) is stored with every step; a restore with a
    config that differs outside ``compat_exclude`` is refused.
    """

    def __init__(self, directory: str | os.PathLike, config: Any = None, keep: int = 3,
                 compat_exclude: Sequence[str] = DEFAULT_COMPAT_EXCLUDE):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.directory = os.path.abspath(os.fspath(directory))
        if os.path.exists(self.directory) and not os.path.isdir(self.directory):
            raise CheckpointError(f"checkpoint directory {self.directory} exists and is not a directory")
        self.config_flat = _flat_config(config)
        self.compat_exclude = tuple(compat_exclude)
        self.config_hash = _compat_hash(self.config_flat, self.compat_exclude)
        if keep < 1:
            raise CheckpointError(f"checkpoint keep must be >= 1, got {keep}")
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
        )

    # ------------------------------------------------------------------ queries
    def all_steps(self) -> list[int]:
        self._manager.reload()
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        steps = self.all_steps()
        return steps[-1] if steps else None

    # ------------------------------------------------------------------ save
    def save(self, step: int, state: Any, extra: Mapping[str, Any] | None = None) -> None:
        """Write ``state`` as checkpoint ``step`` (blocks until it is committed)."""
        ocp = self._ocp
        step = int(step)
        if step in self.all_steps():
            raise CheckpointError(f"checkpoint step {step} already exists in {self.directory}")
        paths, arrays, specs, treedef = _describe(state)
        meta = {
            "config": self.config_flat,
            "config_hash": self.config_hash,
            "compat_exclude": list(self.compat_exclude),
            "treedef": str(treedef),
            "paths": paths,
            "leaves": specs,
            "extra": dict(extra or {}),
        }
        items = {f"{i:05d}": a for i, a in enumerate(arrays)}
        self._manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(items), meta=ocp.args.JsonSave(meta)))
        self._manager.wait_until_finished()

    # ------------------------------------------------------------------ restore
    def read_meta(self, step: int) -> dict:
        ocp = self._ocp
        try:
            out = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
            meta = out.meta
        except Exception as e:  # orbax raises many types; report one line
            raise self._unreadable(step, e) from None
        if not isinstance(meta, dict) or "treedef" not in meta:
            raise CheckpointError(f"checkpoint {self.directory}/{step}: metadata missing or malformed")
        return meta

    def _unreadable(self, step: int, e: Exception) -> CheckpointError:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        others = [s for s in self.all_steps() if s != step]
        return CheckpointError(
            f"checkpoint {self.directory}/{step} is unreadable or incomplete ({type(e).__name__}: {first});"
            f" other steps: {others or 'none'}; nothing was deleted")

    def check_compatible(self, meta: Mapping[str, Any], step: int) -> None:
        if meta.get("config_hash") == self.config_hash:
            return
        old = _compat_view(meta.get("config", {}), self.compat_exclude)
        new = _compat_view(self.config_flat, self.compat_exclude)
        diffs = [f"{k}: {old.get(k, '<missing>')!r} (checkpoint) vs {new.get(k, '<missing>')!r} (now)"
                 for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)
                 and not (k not in old and k in ADDED_FIELDS and new.get(k) == ADDED_FIELDS[k])]
        if not diffs:
            return
        shown = "; ".join(diffs[:3]) + (f"; and {len(diffs) - 3} more" if len(diffs) > 3 else "")
        raise CheckpointError(
            f"checkpoint {self.directory}/{step} was written with an incompatible config ({shown or 'hash differs'})")

    def restore(self, like: Any, step: int | None = None) -> tuple[Any, dict]:
        """Restore checkpoint ``step`` (default: latest) into the structure of ``like``.

        ``like`` is a state of the same structure (e.g. a freshly initialised one); its
        leaf values are ignored. Returns ``(state, extra)``.
        """
        ocp = self._ocp
        if step is None:
            step = self.latest_step()
            if step is None:
                raise CheckpointError(f"no checkpoint in {self.directory}")
        step = int(step)
        if step not in self.all_steps():
            raise CheckpointError(f"no checkpoint step {step} in {self.directory} (have {self.all_steps()})")
        meta = self.read_meta(step)
        self.check_compatible(meta, step)
        paths, arrays, specs, treedef = _describe(like)
        if str(treedef) != meta["treedef"] or paths != meta["paths"]:
            missing = [p for p in paths if p not in meta["paths"]]
            extra = [p for p in meta["paths"] if p not in paths]
            raise CheckpointError(
                f"checkpoint {self.directory}/{step} has a different state structure "
                f"(missing in checkpoint: {missing[:3]}, only in checkpoint: {extra[:3]})")
        for p, s_now, s_old in zip(paths, specs, meta["leaves"]):
            if s_now["shape"] != s_old["shape"] or s_now["dtype"] != s_old["dtype"]:
                raise CheckpointError(
                    f"checkpoint {self.directory}/{step}: leaf {p} is {s_old['dtype']}{s_old['shape']} "
                    f"in the checkpoint but {s_now['dtype']}{s_now['shape']} now")
        template = {f"{i:05d}": a for i, a in enumerate(arrays)}
        try:
            out = self._manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(template)))
            items = out.state
        except Exception as e:
            raise self._unreadable(step, e) from None
        leaves = [_decode_leaf(items[f"{i:05d}"], spec["kind"]) for i, spec in enumerate(meta["leaves"])]
        return jax.tree_util.tree_unflatten(treedef, leaves), meta.get("extra", {})

    def close(self) -> None:
        self._manager.close()
