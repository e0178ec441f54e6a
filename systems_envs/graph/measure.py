"""Timing in onnxruntime on this CPU: single operators, whole graphs, and side-by-side comparisons.

Three tools share one session setup (:func:`make_session`: CPU execution provider,
``intra_op_num_threads`` fixed, default 1 so that a timing does not depend on how busy
the other cores are, sequential execution, onnxruntime's default graph optimisation
level ``ORT_ENABLE_ALL`` unless asked otherwise) and one on-disk cache convention (JSON
files ``{machine id: {key: value}}`` in ``cache_dir``, else ``$SYSWORLD_CACHE_DIR``, else
``~/.cache/sysworld``; the machine id combines the platform, the CPU model, the
onnxruntime version and the thread count; a corrupt cache file is rebuilt, never fatal):

* :class:`OnnxRuntimeTimer` (``measured_costs.json``): the ``measure`` callable of
  ``CostModel(mode="measured")``: ``timer(graph, node) -> ms``, one operator alone in a
  one-node graph whose every input is a graph input fed with deterministic random data
  (so onnxruntime cannot constant-fold it); median of ``repeats`` runs after ``warmup``.
  Layout-only operators cost 0 ms, as in the analytic model.
* :class:`E2ETimer` (``e2e_costs.json``, keyed by :meth:`Graph.hash`): a whole graph
  exported with :func:`~systems_envs.graph.onnx_io.export_onnx` and run end to end:
  ``warmup`` untimed runs, then ``rounds`` rounds alternating two sessions of the same
  model (so a slow spell of the machine hits both), each round keeping the fastest of a
  few back-to-back runs, the median over rounds and a noise estimate (see :class:`Timing`).
* :func:`compare_models`: an original and an optimised model side by side, interleaved
  rounds with a second session of the original as a noise control (see :class:`Comparison`);
  :func:`keep_if_faster`: which of the two to write, the optimised model only if faster.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from systems_envs.graph.ir import Graph, GraphError, Node
from systems_envs.graph.ops import OPS

CACHE_FILE = "measured_costs.json"
INNER_ROUND_MS = 1.0  # compare_models: about this much of back-to-back runs per session and round
E2E_CACHE_FILE = "e2e_costs.json"


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
    """Identifies where a timing is valid: platform, CPU model, onnxruntime version, threads
    and the clock (:func:`run_clock`)."""
    import onnxruntime as ort

    clock = "thread cpu time" if threads == 1 else "wall time"
    return (f"{platform.system()}-{platform.machine()}|{cpu_model()}|onnxruntime {ort.__version__}|threads {threads}"
            f"|{clock}")


def run_clock(threads: int):
    """The clock that times a run, in seconds: with one intra-op thread onnxruntime runs the
    model in the calling thread, so that thread's CPU time is the run time without the
    periods the operating system gave the core to other processes (a shared machine's
    preemptions); with more threads, wall time."""
    return time.thread_time if threads == 1 else time.perf_counter


class JsonCache:
    """A ``{machine id: {key: value}}`` JSON file, read lazily and merged on save.

    Saving merges with what another process may have written meanwhile and replaces the
    file atomically; an unreadable file counts as empty.
    """

    def __init__(self, path: Path, machine: str):
        self.path = Path(path)
        self.machine = machine
        self._data: dict[str, dict[str, Any]] | None = None

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text())
            return {k: dict(v) for k, v in data.items() if isinstance(v, dict)} if isinstance(data, dict) else {}
        except (OSError, ValueError, AttributeError):
            return {}

    @property
    def table(self) -> dict[str, Any]:
        """This machine's entries (mutable; call :meth:`save` after changing it)."""
        if self._data is None:
            self._data = self._read()
        return self._data.setdefault(self.machine, {})

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        merged = self._read()
        for mid, table in (self._data or {}).items():
            merged.setdefault(mid, {}).update(table)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.stem}.", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(merged, f, indent=0, sort_keys=True)
        os.replace(tmp, self.path)


# ----------------------------------------------------------------------------- sessions
def export_for_timing(graph: Graph):
    """``graph`` as an ONNX model to time: :func:`~systems_envs.graph.onnx_io.export_onnx`, at
    the newest default-domain opset of its imported (opaque) nodes when that is above the
    exporter's default, so that onnxruntime reads those nodes with their own semantics."""
    from systems_envs.graph.onnx_io import export_onnx

    versions = []
    for n in graph.nodes.values():
        if n.op == "opaque":
            spec = dict(n.attrs["attributes"])
            versions.append(int(spec.get("opset", 0)) if spec.get("domain") in ("", "ai.onnx")
                            else int(spec.get("default_opset", 0)))
    return export_onnx(graph, opset=max(versions)) if versions and max(versions) > 17 else export_onnx(graph)


def make_session(model, threads: int = 1, optimize: bool = True, optimized_path: str | None = None):
    """An onnxruntime CPU session of ``model`` (ModelProto, bytes or path).

    ``optimize``: onnxruntime's default level (``ORT_ENABLE_ALL``: constant folding, its
    node fusions and the NCHWc layout transform), else ``ORT_DISABLE_ALL``. Raises
    GraphError (first line of onnxruntime's message) if onnxruntime rejects the model.
    ``optimized_path``: also write the model as onnxruntime optimised it there.
    """
    import onnxruntime as ort

    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                     else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    if optimized_path is not None:
        opts.optimized_model_filepath = str(optimized_path)
    src = model.SerializeToString() if hasattr(model, "SerializeToString") else (
        model if isinstance(model, bytes) else str(model))
    try:
        return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types
        raise GraphError(f"onnxruntime cannot load the model: {str(e).strip().splitlines()[0]}") from None


_NP_OF_ORT = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
              "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8,
              "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_}


def session_feeds(sess, seed: int = 0, dims: int = 1) -> dict[str, np.ndarray]:
    """Deterministic inputs for every input of ``sess``.

    Floats: standard normal; integers and booleans: ones (a valid token id, index and
    attention mask). Symbolic dimensions take ``dims``.
    """
    rng = np.random.default_rng(seed)
    feeds = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else dims for d in i.shape]
        dt = _NP_OF_ORT.get(i.type)
        if dt is None:
            raise GraphError(f"input {i.name!r}: cannot feed type {i.type} for timing")
        feeds[i.name] = (rng.standard_normal(shape).astype(dt) if np.issubdtype(dt, np.floating)
                         else np.ones(shape, dt))
    return feeds


def interleaved_ms(sessions: Sequence, feeds: Sequence[dict], rounds: int, warmup: int, inner: int = 1,
                   clock=time.perf_counter, bound: bool = False) -> np.ndarray:
    """Run times in ms, shape ``[rounds, len(sessions)]``.

    Each session first runs ``warmup`` times untimed; then each round runs every session
    ``inner`` times back to back and keeps the fastest of those runs (a run preempted by
    another process on a shared machine is dropped), the sessions in an order that
    rotates from round to round, so drift of the machine's load reaches all alike.
    ``clock``: seconds (:func:`run_clock`). ``bound``: run through onnxruntime's I/O binding,
    inputs and outputs bound once to preallocated buffers (:func:`bound_run`), so that a run
    times the model without the per-input and per-output conversions of ``run``.
    """
    if rounds < 1 or warmup < 0 or inner < 1:
        raise ValueError(f"rounds and inner must be >= 1 and warmup >= 0, got {rounds}, {inner}, {warmup}")
    runs = [bound_run(s, f) if bound else (lambda s=s, f=f: s.run(None, f)) for s, f in zip(sessions, feeds)]
    for run in runs:
        for _ in range(warmup):
            run()
    k = len(sessions)
    out = np.zeros((rounds, k))
    for r in range(rounds):
        for j in range(k):
            i = (j + r) % k
            best = float("inf")
            for _ in range(inner):
                t0 = clock()
                runs[i]()
                best = min(best, clock() - t0)
            out[r, i] = 1e3 * best
    return out


def bound_run(sess, feeds: dict[str, np.ndarray]):
    """A zero-argument callable that runs ``sess`` on ``feeds`` through an I/O binding: the
    inputs bound once as onnxruntime values, the outputs to buffers preallocated from one
    ordinary run (static output shapes)."""
    import onnxruntime as ort

    binding = sess.io_binding()
    for name, value in feeds.items():
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value)))
    for meta, value in zip(sess.get_outputs(), sess.run(None, feeds)):
        binding.bind_ortvalue_output(meta.name, ort.OrtValue.ortvalue_from_numpy(np.empty_like(value)))
    return lambda: sess.run_with_iobinding(binding)


def memory_bandwidth(mbytes: int = 256, repeats: int = 5) -> float:
    """Single-thread streaming read bandwidth of main memory, bytes/s (best of ``repeats``
    sums over a ``mbytes`` MB float32 array, far larger than the CPU's caches)."""
    a = np.ones(mbytes * 2**20 // 4, np.float32)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a.sum()
        best = min(best, time.perf_counter() - t0)
    return a.nbytes / best


def _rel_half_iqr(x: np.ndarray) -> float:
    q1, q3 = np.percentile(x, [25, 75])
    return float((q3 - q1) / 2 / max(np.median(x), 1e-12))


# ----------------------------------------------------------------------------- single operators
def signature_digest(graph: Graph, node: Node) -> str:
    """Stable hex digest of the node's cost signature (op, attributes, shapes)."""
    from systems_envs.graph.cost import signature

    return hashlib.blake2b(repr(signature(graph, node)).encode(), digest_size=16).hexdigest()


def single_node_graph(graph: Graph, node: Node) -> Graph:
    """A graph holding only ``node`` with each input slot a fresh graph input of the same shape
    (and, for a graph input feeding it, the same element type, e.g. int64 token ids)."""
    g = Graph(f"{node.op}_single")
    ins = []
    for k, r in enumerate(node.inputs):
        src = graph.nodes[r[0]]
        dtype = src.attrs.get("dtype", "float32") if src.op == "input" else "float32"
        ins.append(g.add("input", name=f"x{k}", shape=tuple(graph.shape(r)), dtype=dtype))
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
        self._cache = JsonCache(self.cache_path, self.machine)

    def __call__(self, graph: Graph, node: Node) -> float:
        if OPS[node.op].layout_only:
            return 0.0
        key = signature_digest(graph, node)
        table = self._cache.table
        if key in table:
            return float(table[key])
        ms = self.time_node(graph, node)
        table[key] = ms
        self._cache.save()
        return ms

    def time_node(self, graph: Graph, node: Node) -> float:
        """Time ``node`` now (no cache): median of ``repeats`` runs in ms."""
        from systems_envs.graph.onnx_io import export_onnx

        g = single_node_graph(graph, node)
        try:
            sess = make_session(export_onnx(g), self.threads)
        except GraphError as e:
            raise GraphError(f"node {node.name!r} ({node.op}): {e}") from None
        rng = np.random.default_rng(self.seed)
        feeds = {n.attrs["name"]: rng.standard_normal(n.shape).astype(np.float32)
                 if np.dtype(n.attrs.get("dtype", "float32")).kind == "f"
                 else np.zeros(n.shape, np.dtype(n.attrs["dtype"])) for n in g.inputs}
        if node.op == "batchnorm":  # variance must be positive
            feeds["x4"] = np.abs(feeds["x4"]) + 0.5
        self.timed += 1
        return float(np.median(interleaved_ms([sess], [feeds], self.repeats, self.warmup,
                                              clock=run_clock(self.threads))))


# ----------------------------------------------------------------------------- whole graphs
@dataclasses.dataclass(frozen=True)
class Timing:
    """End-to-end time of one model.

    Attributes:
      median_ms: median over rounds and the two sessions of each round's run time, ms.
      noise: relative noise: the larger of half the interquartile range of the runs over
        their median and the relative gap between the medians of the two alternating
        sessions (so 0.03 = +-3%).
      runs: number of round times (rounds x 2 sessions).
    """

    median_ms: float
    noise: float
    runs: int


def time_model(model, threads: int = 1, warmup: int = 5, rounds: int = 20, seed: int = 0,
               optimize: bool = True, inner: int = 3) -> Timing:
    """Time ``model`` (ModelProto, bytes or path) end to end: two sessions alternating for
    ``rounds`` rounds, each round's time the fastest of ``inner`` back-to-back runs
    (:func:`interleaved_ms`)."""
    sessions = [make_session(model, threads, optimize) for _ in range(2)]
    feeds = session_feeds(sessions[0], seed)
    t = interleaved_ms(sessions, [feeds, feeds], rounds, warmup, inner, run_clock(threads))
    med = float(np.median(t))
    gap = abs(float(np.median(t[:, 0]) - np.median(t[:, 1]))) / max(med, 1e-12)
    return Timing(med, max(_rel_half_iqr(t.ravel()), gap), int(t.size))


class E2ETimer:
    """Callable ``graph -> ms``: the whole graph timed end to end in onnxruntime, cached by graph hash.

    Args:
      cache_dir: folder of ``e2e_costs.json`` (default: :func:`default_cache_dir`).
      threads, warmup, rounds, seed: as :func:`time_model` (each round runs the model twice).

    Attributes:
      timed: graphs actually timed by this instance (cache misses).
    """

    def __init__(self, cache_dir: str | Path | None = None, threads: int = 1, warmup: int = 5,
                 rounds: int = 20, seed: int = 0):
        if threads < 1 or warmup < 0 or rounds < 1:
            raise ValueError(f"E2ETimer: bad settings threads={threads} warmup={warmup} rounds={rounds}")
        self.cache_path = Path(cache_dir if cache_dir is not None else default_cache_dir()) / E2E_CACHE_FILE
        self.threads, self.warmup, self.rounds, self.seed = threads, warmup, rounds, seed
        self.timed = 0
        self._cache = JsonCache(self.cache_path, machine_id(threads))

    def __call__(self, graph: Graph) -> float:
        return self.timing(graph).median_ms

    def timing(self, graph: Graph) -> Timing:
        """The cached :class:`Timing` of ``graph``, measured now on a cache miss."""
        key = graph.hash()
        hit = self._cache.table.get(key)
        if isinstance(hit, dict) and {"median_ms", "noise", "runs"} <= hit.keys():
            return Timing(float(hit["median_ms"]), float(hit["noise"]), int(hit["runs"]))
        try:
            t = time_model(export_for_timing(graph), self.threads, self.warmup, self.rounds, self.seed)
        except GraphError as e:
            raise GraphError(f"graph {graph.name!r}: {e}") from None
        self.timed += 1
        self._cache.table[key] = dataclasses.asdict(t)
        self._cache.save()
        return t


# ----------------------------------------------------------------------------- comparisons
@dataclasses.dataclass(frozen=True)
class Comparison:
    """Original vs optimised model, timed side by side.

    Attributes:
      before_ms, after_ms: median run times of the original and the optimised model, ms.
      speedup: median over rounds of (original time / optimised time); > 1 is faster.
      spread: half the interquartile range of those per-round ratios.
      noise: the same ratio between two sessions of the original (the noise control):
        ``|median - 1|`` plus its half interquartile range. A speed-up is only real
        beyond it.
      rounds: timed rounds (each runs the three sessions once).
      inner: runs per session and round, of which the fastest is kept.
    """

    before_ms: float
    after_ms: float
    speedup: float
    spread: float
    noise: float
    rounds: int
    inner: int = 3

    @property
    def verdict(self) -> str:
        """``faster``, ``slower`` or ``same`` (within noise)."""
        margin = max(self.noise, self.spread)
        if self.speedup - 1.0 > margin:
            return "faster"
        if 1.0 - self.speedup > margin:
            return "slower"
        return "same"


def inner_runs(run_ms: float, round_ms: float = INNER_ROUND_MS, least: int = 3, most: int = 50) -> int:
    """How many back-to-back runs a session's timing in one round takes the fastest of: enough
    for about ``round_ms`` of runs (a model of ``run_ms`` per run), within ``[least, most]``.
    Sub-millisecond models get more runs: the fastest of 3 runs of a 0.05 ms model is still
    often one that another process disturbed on a shared machine."""
    if not run_ms > 0:
        raise ValueError(f"run_ms must be > 0, got {run_ms}")
    return max(least, min(most, math.ceil(round_ms / run_ms)))


def compare_models(original, optimised, threads: int = 1, warmup: int = 5, rounds: int = 30,
                   seed: int = 0, optimize: bool = True, inner: int | None = None) -> Comparison:
    """Time ``original`` and ``optimised`` (ModelProto, bytes or path) in interleaved rounds.

    Three sessions (original, optimised, original again as the noise control) run in
    each round in a rotating order, each timed as the fastest of ``inner`` back-to-back
    runs (:func:`interleaved_ms`), after ``warmup`` untimed runs each. ``inner`` defaults to
    :func:`inner_runs` of the original's run time (the fastest of ``warmup`` timed runs;
    3 for models of 0.33 ms and more). Both models must take the same inputs (names,
    dtypes, shapes); the same feeds go to both.
    """
    sessions = [make_session(m, threads, optimize) for m in (original, optimised, original)]
    feeds = session_feeds(sessions[0], seed)
    names = {i.name for i in sessions[1].get_inputs()}
    if names != set(feeds):
        raise GraphError(f"the optimised model's inputs {sorted(names)} differ from the original's {sorted(feeds)}")
    if inner is None:
        inner = inner_runs(float(interleaved_ms(sessions[:1], [feeds], 1, warmup, max(warmup, 1),
                                                run_clock(threads))[0, 0]))
    t = interleaved_ms(sessions, [feeds] * 3, rounds, warmup, inner, run_clock(threads))
    ratio = t[:, 0] / t[:, 1]
    control = t[:, 0] / t[:, 2]
    noise = abs(float(np.median(control)) - 1.0) + _rel_half_iqr(control) * float(np.median(control))
    return Comparison(float(np.median(t[:, [0, 2]])), float(np.median(t[:, 1])), float(np.median(ratio)),
                      _rel_half_iqr(ratio) * float(np.median(ratio)), noise, rounds, inner)


def keep_if_faster(original, optimised, write_optimized: bool = False, **timing) -> tuple[str, Comparison]:
    """Which model to write, ``"optimized"`` or ``"original"``, and the comparison it rests on.

    Times ``original`` against ``optimised`` once (:func:`compare_models` with ``timing``,
    e.g. ``threads``, ``rounds``, ``seed``) and keeps the original unless the optimised
    model is faster beyond the noise; ``write_optimized`` takes the optimised model regardless.
    The comparison that chose is biased towards the winner (its noise picked it): a figure
    to report for the written model comes from a second, independent comparison.
    """
    cmp = compare_models(original, optimised, **timing)
    return ("optimized" if cmp.verdict == "faster" or write_optimized else "original"), cmp
