"""Run logging: TensorBoard event files (tensorboardX, no TensorFlow), HParams, a progress
bar helper and a machine-readable ``summary.json``.

Scalars are logged against an integer step that counts *real environment steps*, so curves
from runs with different amounts of imagination line up on the x axis.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Iterable, Mapping

import numpy as np


def _to_python(x: Any) -> Any:
    """JSON-safe conversion of numpy/jax scalars and arrays (NaN/inf become strings)."""
    if isinstance(x, Mapping):
        return {str(k): _to_python(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_to_python(v) for v in x]
    if hasattr(x, "__array__") and not isinstance(x, (str, bytes)):
        a = np.asarray(x)
        return _to_python(a.item() if a.ndim == 0 else a.tolist())
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, (bool, int, float, str)) or x is None:
        return x
    return str(x)


def write_json_atomic(path: str, data: Any) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(_to_python(data), f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


class RunLogger:
    """TensorBoard + summary logger for one run directory.

    >>> log = RunLogger("runs/x"); log.scalar("eval/return", 1.0, step=1000); log.close()
    """

    def __init__(self, logdir: str | os.PathLike, flush_secs: int = 10):
        from tensorboardX import SummaryWriter

        self.logdir = os.fspath(logdir)
        os.makedirs(self.logdir, exist_ok=True)
        self._writer = SummaryWriter(logdir=self.logdir, flush_secs=flush_secs)

    # scalars ------------------------------------------------------------------------
    def scalar(self, tag: str, value: Any, step: int) -> None:
        """Log one scalar; ``step`` = real environment steps so far (int >= 0)."""
        step = int(step)
        if step < 0:
            raise ValueError(f"log step for {tag!r} must be >= 0, got {step}")
        self._writer.add_scalar(tag, float(np.asarray(value)), global_step=step)

    def scalars(self, values: Mapping[str, Any], step: int, prefix: str = "") -> None:
        """Log every scalar entry of ``values`` (non-scalars are skipped) under ``prefix``."""
        for k, v in values.items():
            a = np.asarray(v)
            if a.ndim == 0 and np.issubdtype(a.dtype, np.number):
                self.scalar(prefix + k, a, step)

    def histogram(self, tag: str, values: Any, step: int) -> None:
        self._writer.add_histogram(tag, np.asarray(values), global_step=int(step))

    def text(self, tag: str, text: str, step: int = 0) -> None:
        self._writer.add_text(tag, text, global_step=int(step))

    # hparams ------------------------------------------------------------------------
    def hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        """Record the run's hyper-parameters (flattened config) for the HParams view.

        ``metrics`` maps the scalar tags the HParams table should show to their final
        values. Written into this run's own event file (not a sub-run directory).
        """
        from tensorboardX.summary import hparams as hparams_summary

        hp = {}
        for k, v in hparams.items():
            v = _to_python(v)
            hp[k] = v if isinstance(v, (bool, int, float, str)) else json.dumps(v)
        exp, ssi, sei = hparams_summary(hp, {k: float(np.asarray(v)) for k, v in metrics.items()})
        fw = self._writer._get_file_writer()
        for s in (exp, ssi, sei):
            fw.add_summary(s)

    # summary ------------------------------------------------------------------------
    def write_summary(self, data: Mapping[str, Any], name: str = "summary.json") -> str:
        """Write ``data`` (JSON-safe conversion) to ``logdir/summary.json`` atomically."""
        path = os.path.join(self.logdir, name)
        write_json_atomic(path, data)
        return path

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> "RunLogger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(iterable: Iterable | None = None, total: int | None = None, desc: str = "",
             enabled: bool = True, unit: str = "it"):
    """A tqdm progress bar (a no-op bar when ``enabled`` is False). Use ``bar.update(n)``
    with ``total`` for step counts, or wrap an ``iterable``."""
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, disable=not enabled, unit=unit,
                dynamic_ncols=True, leave=False)
