"""evaluate_many (vectorised over placements) against the scalar simulator and a naive memory sweep."""
import numpy as np
import pytest

from systems_envs.placement.graphs import transformer
from systems_envs.placement.simulator import compile_graph, evaluate_many, schedule, simulate

from .conftest import LAT_MS, XFER_MS, branchy


def _random_placements(cg, rng, b):
    """Uniform random rows, two-device rows and near-single-device rows (few transfers)."""
    D = cg.num_devices
    ps = rng.integers(0, D, (b, cg.n))
    ps[: b // 3] = rng.integers(0, min(2, D), (b // 3, cg.n))
    near = np.repeat((np.arange(cg.n) * D // cg.n)[None], b // 3, axis=0)
    flip = rng.random(near.shape) < 0.05
    near[flip] = rng.integers(0, D, int(flip.sum()))
    ps[b // 3: b // 3 + len(near)] = near
    return ps


def _naive_peak(cg, p):
    """[D] peak memory from the module docstring, one event at a time in plain Python."""
    start, fin, xfers = schedule(cg, p)
    D, makespan = cg.num_devices, max(fin)
    prod, tb = cg.tensor_producer.tolist(), cg.tensor_bytes.tolist()
    slots = {}  # (tensor, device) -> [alloc, free]
    for t, j in enumerate(prod):
        slots[(t, int(p[j]))] = [start[j], fin[j]]
    for e in range(0, len(xfers), 3):
        k, st, end = xfers[e: e + 3]
        t = int(cg.cons_tensor[k])
        home = slots[(t, int(p[prod[t]]))]
        home[1] = max(home[1], end)
        slots[(t, int(p[cg.cons_op[k]]))] = [st, -np.inf]
    for t, c in zip(cg.cons_tensor.tolist(), cg.cons_op.tolist()):
        s = slots[(t, int(p[c]))]
        s[1] = max(s[1], fin[c])
    for t in np.flatnonzero(cg.tensor_is_output):
        slots[(int(t), int(p[prod[t]]))][1] = makespan
    peak = np.zeros(D)
    for d in range(D):
        ev = sorted([(f, 0, -tb[t]) for (t, dd), (a, f) in slots.items() if dd == d] +
                    [(a, 1, tb[t]) for (t, dd), (a, f) in slots.items() if dd == d])
        live = 0.0
        for _, _, delta in ev:
            live += delta
            peak[d] = max(peak[d], live)
    mark = {(int(r), int(p[o])) for r, o in zip(cg.res_tensor, cg.res_op)}
    for r, d in mark:
        peak[d] += cg.res_bytes[r]
    return peak


@pytest.mark.parametrize("preset", ["gpu4", "cpu+gpu4", "gpu2"])
def test_batch_equals_scalar(preset):
    g = transformer(3, 64, 4, 1, 16)
    cg = compile_graph(g, preset)
    rng = np.random.default_rng(0)
    ps = _random_placements(cg, rng, 60)
    br = evaluate_many(cg, ps, chunk=16)
    assert br.step_time_ms.shape == (60,) and br.peak_memory_bytes.shape == (60, cg.num_devices)
    for k, p in enumerate(ps):
        r = simulate(cg, p)
        assert br.makespan_ms[k] == r.makespan_ms
        assert br.step_time_ms[k] == r.step_time_ms and br.valid[k] == r.valid
        np.testing.assert_array_equal(br.peak_memory_bytes[k], r.peak_memory_bytes)
        np.testing.assert_array_equal(br.busy_ms[k], r.busy_ms)
        assert br.transferred_bytes[k] == r.transferred_bytes


def test_batch_marks_out_of_memory_like_scalar():
    cg0 = compile_graph(branchy(), "gpu4")
    rng = np.random.default_rng(1)
    ps = _random_placements(cg0, rng, 30)
    peaks = evaluate_many(cg0, ps).peak_memory_bytes.max(axis=1)
    cap = float(np.median(peaks))  # about half the rows run out of memory
    cg = compile_graph(branchy(), cg0.devices.with_memory(cap))
    br = evaluate_many(cg, ps, chunk=7)
    assert 0 < br.valid.sum() < len(ps)
    for k, p in enumerate(ps):
        r = simulate(cg, p)
        assert br.valid[k] == r.valid and br.step_time_ms[k] == r.step_time_ms
        assert (np.isinf(br.step_time_ms[k])) == (not r.valid)
        assert br.makespan_ms[k] == r.makespan_ms


def test_memory_matches_naive_sweep():
    cg = compile_graph(transformer(2, 64, 4, 1, 16), "gpu4")
    rng = np.random.default_rng(2)
    ps = _random_placements(cg, rng, 24)
    br = evaluate_many(cg, ps, chunk=5)
    for k, p in enumerate(ps):
        np.testing.assert_array_equal(br.peak_memory_bytes[k], _naive_peak(cg, p))
        np.testing.assert_array_equal(simulate(cg, p).peak_memory_bytes, _naive_peak(cg, p))


def test_chunking_does_not_change_results():
    cg = compile_graph(branchy(), "gpu8")
    ps = _random_placements(cg, np.random.default_rng(3), 20)
    a, b = evaluate_many(cg, ps, chunk=1), evaluate_many(cg, ps, chunk=64)
    for f in ("step_time_ms", "valid", "makespan_ms", "busy_ms", "peak_memory_bytes", "transferred_bytes"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))


def test_batch_hand_computed_chain(chain, devs2):
    cg = compile_graph(chain, devs2)
    d = cg.dur_ms[:, 0]
    br = evaluate_many(cg, [[0, 0, 0], [0, 0, 1], [0, 1, 0]])
    np.testing.assert_allclose(br.step_time_ms, [d.sum(), d.sum() + LAT_MS + XFER_MS,
                                                 d.sum() + 2 * (LAT_MS + XFER_MS)])
    np.testing.assert_allclose(br.transferred_bytes, [0, 4000, 8000])


def test_batch_bad_input(chain, devs2):
    cg = compile_graph(chain, devs2)
    with pytest.raises(ValueError, match="shape"):
        evaluate_many(cg, [0, 0, 0])
    with pytest.raises(ValueError, match="device indices"):
        evaluate_many(cg, [[0, 0, 2]])
    with pytest.raises(ValueError, match="chunk"):
        evaluate_many(cg, [[0, 0, 1]], chunk=0)
    assert evaluate_many(cg, np.zeros((0, 3), dtype=np.int64)).step_time_ms.shape == (0,)


def test_batch_single_op_graph_without_edges(devs2):
    from systems_envs.graph.ir import Graph

    g = Graph("lone")
    g.set_outputs([g.add("add", [g.input("x", (1, 1000)), g.weight("w", (1, 1000))])])
    cg = compile_graph(g, devs2)
    br = evaluate_many(cg, [[0], [1]])
    for k in range(2):
        r = simulate(cg, [k])
        np.testing.assert_array_equal(br.peak_memory_bytes[k], r.peak_memory_bytes)
        assert br.step_time_ms[k] == r.step_time_ms
    np.testing.assert_array_equal(br.peak_memory_bytes[:, 0], [12000, 0])
