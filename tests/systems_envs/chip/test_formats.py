"""Netlist and .plc readers/writer: ariane133 counts, parser agreement, round trip, bad input."""
import gzip

import numpy as np
import pytest

from systems_envs.chip.cost import evaluate
from systems_envs.chip.netlist import NetlistError, read_netlist, read_netlist_protobuf
from systems_envs.chip.plc import PlcError, read_plc, write_plc

from .conftest import ARIANE_PLC, TINY, TINY_HEADER, node


def test_ariane_counts(ariane):
    nl, header, pl = ariane
    assert (len(nl.hard), len(nl.soft), len(nl.ports)) == (133, 782, 495)
    assert (header.columns, header.rows) == (24, 21)
    assert header.hrouting_alloc == 39.583 and header.vroutes_per_micron == 56.818
    assert nl.metadata["soft_macro_area_bloating_ratio"] == 2.0


def test_protobuf_text_format_reader_agrees(tmp_path, tiny):
    p = tmp_path / "t.pb.txt.gz"
    p.write_bytes(gzip.compress(TINY.encode()))
    a, b = read_netlist(str(p)), read_netlist_protobuf(str(p))
    for k in ("obj_x", "obj_y", "obj_width", "pin_dx", "pin_dy", "net_pins", "net_ptr", "net_weight", "pin_obj"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k), err_msg=k)
    np.testing.assert_array_equal(a.net_pins, tiny.net_pins)


def test_plc_round_trip(tmp_path, ariane):
    nl, header, pl = ariane
    rng = np.random.default_rng(1)
    pl = pl.copy()
    pl.x[nl.hard] += rng.normal(0, 3.3, len(nl.hard))
    c = evaluate(nl, header, pl)
    out = tmp_path / "out.plc"
    write_plc(str(out), nl, pl, header, costs=c.as_dict(), source="netlist.pb.txt.gz")
    h2, pl2 = read_plc(str(out), nl)
    assert h2.settings() == header.settings()
    for k in ("x", "y", "orient", "fixed"):
        np.testing.assert_array_equal(getattr(pl2, k), getattr(pl, k))
    assert h2.recorded["congestion_cost"] == round(c.congestion_cost, 4)
    assert evaluate(nl, h2, pl2) == c


def test_tiny_plc_round_trip(tmp_path, tiny):
    from systems_envs.chip.plc import Placement
    pl = Placement.from_netlist(tiny)
    write_plc(str(tmp_path / "t.plc"), tiny, pl, TINY_HEADER)
    h, pl2 = read_plc(str(tmp_path / "t.plc"), tiny)
    assert h.settings() == TINY_HEADER
    np.testing.assert_array_equal(pl2.x, pl.x)


def _write(tmp_path, text, name="bad.pb.txt"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


@pytest.mark.parametrize("text, msg", [
    (TINY[: len(TINY) // 2], "truncated"),
    (TINY.replace('input: "Grp_B/p"', 'input: "Nope/p"', 1), "'Nope/p': missing node"),
    (TINY.replace('placeholder: "A"', 'placeholder: "Z"'), "unknown macro 'Z'"),
    (TINY.replace("f: 4.0\n    }\n  }\n  attr {\n    key: \"type\"\n    value {\n      placeholder: \"macro\"",
                  "f: -4.0\n    }\n  }\n  attr {\n    key: \"type\"\n    value {\n      placeholder: \"macro\""),
     "non-positive size"),
    ("hello\n" + TINY, "line 1"),
    (TINY + node("S", "STDCELL", width=1.0, height=1.0, x=1.0, y=1.0), "STDCELL"),
])
def test_bad_netlists(tmp_path, text, msg):
    with pytest.raises(NetlistError, match="bad.pb.txt") as e:
        read_netlist(_write(tmp_path, text))
    assert msg in str(e.value) and "\n" not in str(e.value)


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such netlist"):
        read_netlist(str(tmp_path / "none.pb.txt"))
    with pytest.raises(FileNotFoundError, match="no such .plc"):
        read_plc(str(tmp_path / "none.plc"))


def test_plc_not_matching_netlist(tmp_path, tiny):
    lines = open(ARIANE_PLC).read()
    p = tmp_path / "other.plc"
    p.write_text(lines)
    with pytest.raises(PlcError, match=r"other.plc: line 166: node 2 .*is a pin"):
        read_plc(str(p), tiny)
    p.write_text("# Columns : 3  Rows : 3\n# Width : 30  Height : 30\n0 0 25 - 1\n")
    with pytest.raises(PlcError, match="does not place 2 macro"):
        read_plc(str(p), tiny)
    p.write_text("# Columns : 3  Rows : 3\n0 0 25 - 1\n")
    with pytest.raises(PlcError, match="Width"):
        read_plc(str(p), tiny)
    p.write_text("# Columns : 3  Rows : 3\n# Width : 30  Height : 30\n0 0 25 - \n")
    with pytest.raises(PlcError, match="line 3: expected"):
        read_plc(str(p), tiny)


def test_circuit_training_spelling(tmp_path, tiny):
    """Lower-case types, soft macros told apart by a ``Grp`` name, comments with braces."""
    text = "# FP bbox: {0 0} {30 30}\n" + TINY.replace('"PORT"', '"port"').replace('"MACRO"', '"macro"').replace(
        '"MACRO_PIN"', '"macro_pin"')
    nl = read_netlist(_write(tmp_path, text, "ct.pb.txt"))
    np.testing.assert_array_equal(nl.obj_kind, tiny.obj_kind)
    np.testing.assert_array_equal(nl.pin_dx, tiny.pin_dx)
    assert list(nl.obj_kind) == [0, 1, 2]


def test_missing_header_settings_take_circuit_training_defaults(tmp_path, tiny):
    p = tmp_path / "t.plc"
    p.write_text("# Columns : 3  Rows : 3\n# Width : 30  Height : 30\n0 0 25 - 1\n1 15 15 N 0\n3 5 5 N 0\n")
    h, _ = read_plc(str(p), tiny)
    assert (h.hroutes_per_micron, h.vroutes_per_micron, h.hrouting_alloc, h.smooth_range) == (70.33, 74.51, 51.79, 5)


def test_write_netlist_round_trip(tmp_path):
    from systems_envs.chip.generator import generate_netlist
    from systems_envs.chip.netlist import write_netlist

    nl, header, pl = generate_netlist(num_hard=5, num_soft=9, num_ports=6, num_nets=40, seed=2)
    path = str(tmp_path / "g.pb.txt.gz")
    write_netlist(path, nl)
    back = read_netlist(path)
    for k in ("obj_kind", "obj_width", "obj_x", "pin_obj", "pin_dx", "pin_dy", "net_ptr", "net_pins", "net_weight"):
        np.testing.assert_array_equal(getattr(back, k), getattr(nl, k), err_msg=k)
    assert back.node_names == nl.node_names
