"""Shared fixtures: ariane133 (shipped) and a tiny netlist written by hand."""
import os

import pytest

from systems_envs.chip.netlist import read_netlist
from systems_envs.chip.plc import PlcHeader, read_plc

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "..", "systems_envs", "data", "netlists", "ariane133")
ARIANE_NETLIST = os.path.normpath(os.path.join(DATA, "netlist.pb.txt.gz"))
ARIANE_PLC = os.path.normpath(os.path.join(DATA, "initial.plc"))


def node(name, typ, inputs=(), **attrs):
    lines = ["node {", f'  name: "{name}"'] + [f'  input: "{i}"' for i in inputs]
    attrs["type"] = typ
    for k, v in sorted(attrs.items()):
        val = f'placeholder: "{v}"' if isinstance(v, str) else f"f: {v}"
        lines.append(f'  attr {{\n    key: "{k}"\n    value {{\n      {val}\n    }}\n  }}')
    return "\n".join(lines + ["}"])


# Canvas 30 x 30, grid 3 x 3 (cells 10 x 10). Hard macro A (10 x 10) at (15, 15) with a pin
# at offset (+4, 0); soft macro B (4 x 4) at (5, 5); port P at (0, 25).
# Net 1 (weight 2): A/p -> B/p, P.   Net 2: P -> B/p.
TINY = "\n".join([
    node("P", "PORT", ["Grp_B/p"], x=0.0, y=25.0, side="LEFT"),
    node("A", "MACRO", width=10.0, height=10.0, x=15.0, y=15.0, orientation="N"),
    node("A/p", "MACRO_PIN", ["Grp_B/p", "P"], macro_name="A", x_offset=4.0, y_offset=0.0, x=19.0, y=15.0, weight=2.0),
    node("Grp_B", "macro", width=4.0, height=4.0, x=5.0, y=5.0),
    node("Grp_B/p", "macro_pin", macro_name="Grp_B", x_offset=0.0, y_offset=0.0, x=5.0, y=5.0),
]) + "\n"
TINY_HEADER = PlcHeader(columns=3, rows=3, width=30.0, height=30.0, hroutes_per_micron=1.0,
                        vroutes_per_micron=1.0, hrouting_alloc=2.0, vrouting_alloc=3.0)


@pytest.fixture
def tiny(tmp_path):
    p = tmp_path / "tiny.pb.txt"
    p.write_text(TINY)
    return read_netlist(str(p))


@pytest.fixture(scope="session")
def ariane():
    nl = read_netlist(ARIANE_NETLIST)
    header, pl = read_plc(ARIANE_PLC, nl)
    return nl, header, pl
