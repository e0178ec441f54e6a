"""Measured operator costs: time one operator with onnxruntime on this CPU.

:class:`OnnxRuntimeTimer` is the ``measure`` callable of ``CostModel(mode="measured")``:
``timer(graph, node) -> milliseconds``. For a node it builds a one-node graph with the
node's signature (every input becomes an ONNX graph input fed with deterministic random
data, so onnxruntime cannot constant-fold the operator away), exports it with
:func:`~systems_envs.graph.onnx_io.export_onnx`, and runs it on the CPU execution
provider with ``intra_op_num_threads`` fixed (default 1: one core, so timings do not
depend on how busy the other cores are) and sequential execution. It runs ``warmup``
times, then reports the median of ``repeats`` runs.

Results are cached on disk as JSON, ``{machine id: {signature digest: ms}}``, where the
machine id combines the platform, the CPU model, the onnxruntime version and the thread
count. The cache file is ``measured_costs.json`` in ``cache_dir`` (constructor argument),
else in ``$SYSWORLD_CACHE_DIR``, else in ``~/.cache/sysworld``.

Layout-only operators (inputs, weights, reshape, split, identity) are never measured:
they cost 0 ms, as in the analytic model.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from systems_envs.graph.ir import Graph, GraphError, Node
from systems_envs.graph.ops import OPS

CACHE_FILE = "measured_costs.json"


def default_cache_dir() -> Path:
    """``$SYSWORLD_CACHE_DIR`` if set, else ``~/.cache/sysworld``."""
    env = os.environ.get("SYSWORLD_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "sysworld"


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo, else platform)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_id(threads: int) -> str:
    """Identifies where a timing is valid: platform, CPU model, onnxruntime version, threads."""
    import onnxruntime as ort

    return f"{platform.system()}-{platform.machine()}|{cpu_model()}|onnxruntime {ort.__version__}|threads {threads}"


def signature_digest(graph: Graph, node: Node) -> str:
    """Stable hex digest of the node's cost signature (op, attributes, shapes)."""
    from systems_envs.graph.cost import signature

    return hashlib.blake2b(repr(signature(graph, node)).encode(), digest_size=16).hexdigest()


def single_node_graph(graph: Graph, node: Node) -> Graph:
    """A graph holding only ``node`` with each input slot a fresh graph input of the same shape."""
    g = Graph(f"{node.op}_single")
    ins = [g.input(f"x{k}", graph.shape(r)) for k, r in enumerate(node.inputs)]
    attrs = dict(node.attrs)
    nid = g.add(node.op, ins, **attrs)
    g.set_outputs([(nid, i) for i in range(len(node.shapes))])
    return g


class OnnxRuntimeTimer:
    """Callable ``(graph, node) -> ms``: median onnxruntime CPU time of one operator, cached on disk.

    Args:
      cache_dir: folder of ``measured_costs.json`` (default: :func:`default_cache_dir`).
      threads: onnxruntime ``intra_op_num_threads`` (default 1).
      warmup: untimed runs before timing.
      repeats: timed runs; the median is reported.
      seed: seed of the random input data.

    Attributes:
      timed: number of operators actually timed by this instance (cache misses).
    """

    def __init__(self, cache_dir: str | Path | None = None, threads: int = 1, warmup: int = 3,
                 repeats: int = 15, seed: int = 0):
        if threads < 1 or warmup < 0 or repeats < 1:
            raise ValueError(f"OnnxRuntimeTimer: bad settings threads={threads} warmup={warmup} repeats={repeats}")
        self.cache_path = Path(cache_dir if cache_dir is not None else default_cache_dir()) / CACHE_FILE
        self.threads = threads
        self.warmup = warmup
        self.repeats = repeats
        self.seed = seed
        self.machine = machine_id(threads)
        self.timed = 0
        self._cache: dict[str, dict[str, float]] | None = None

    # ------------------------------------------------------------------ cache
    def _load(self) -> dict[str, dict[str, float]]:
        if self._cache is None:
            self._cache = {}
            if self.cache_path.is_file():
                try:
                    data = json.loads(self.cache_path.read_text())
                    if isinstance(data, dict):
                        self._cache = {k: dict(v) for k, v in data.items() if isinstance(v, dict)}
                except (OSError, ValueError):
                    self._cache = {}  # a corrupt cache is rebuilt, never fatal
        return self._cache

    def _save(self) -> None:
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        # Merge with what another process may have written meanwhile, then replace atomically.
        merged: dict[str, dict[str, float]] = {}
        if self.cache_path.is_file():
            try:
                merged = {k: dict(v) for k, v in json.loads(self.cache_path.read_text()).items()}
            except (OSError, ValueError, AttributeError):
                merged = {}
        for mid, table in (self._cache or {}).items():
            merged.setdefault(mid, {}).update(table)
        fd, tmp = tempfile.mkstemp(dir=self.cache_path.parent, prefix=".measured_costs.", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(merged, f, indent=0, sort_keys=True)
        os.replace(tmp, self.cache_path)

    # ------------------------------------------------------------------ timing
    def __call__(self, graph: Graph, node: Node) -> float:
        if OPS[node.op].layout_only:
            return 0.0
        key = signature_digest(graph, node)
        table = self._load().setdefault(self.machine, {})
        if key in table:
            return float(table[key])
        ms = self.time_node(graph, node)
        table[key] = ms
        self._save()
        return ms

    def time_node(self, graph: Graph, node: Node) -> float:
        """Time ``node`` now (no cache): median of ``repeats`` runs in ms."""
        import onnxruntime as ort

        from systems_envs.graph.onnx_io import export_onnx

        g = single_node_graph(graph, node)
        model = export_onnx(g)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        try:
            sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise GraphError(f"node {node.name!r} ({node.op}): onnxruntime cannot build it for timing: "
                             f"{str(e).splitlines()[0]}") from None
        rng = np.random.default_rng(self.seed)
        feeds = {n.attrs["name"]: rng.standard_normal(n.shape).astype(np.float32) for n in g.inputs}
        if node.op == "batchnorm":  # variance must be positive
            feeds["x4"] = np.abs(feeds["x4"]) + 0.5
        for _ in range(self.warmup):
            sess.run(None, feeds)
        times = []
        for _ in range(self.repeats):
            t0 = time.perf_counter()
            sess.run(None, feeds)
            times.append(time.perf_counter() - t0)
        self.timed += 1
        return 1e3 * statistics.median(times)
