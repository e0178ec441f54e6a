"""Draw a macro placement (matplotlib, no display needed).

Left panel: canvas outline, grid lines, soft macros (light blue, translucent), hard
macros (orange; the ones outside the canvas or overlapping another hard macro in red),
ports (black dots). Right panel: the congestion heat map, max(horizontal, vertical) per
cell, with the canvas aspect.
"""
from __future__ import annotations

import numpy as np

from systems_envs.chip.cost import PlacementCost
from systems_envs.chip.legality import illegal_macros
from systems_envs.chip.netlist import Netlist
from systems_envs.chip.plc import PlcHeader, Placement


def plot_placement(path: str, nl: Netlist, header: PlcHeader, pl: Placement, title: str = "",
                   cost: PlacementCost | None = None) -> None:
    """Write a PNG of the placement and its congestion map to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Rectangle

    cost = cost or PlacementCost(nl, header, pl)
    W, H = header.width, header.height
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 6.2))
    for c in range(header.columns + 1):
        ax.axvline(c * W / header.columns, color="0.88", lw=0.5, zorder=0)
    for r in range(header.rows + 1):
        ax.axhline(r * H / header.rows, color="0.88", lw=0.5, zorder=0)
    ax.add_patch(Rectangle((0, 0), W, H, fill=False, lw=1.5, color="black"))
    bad = set(illegal_macros(nl, header, pl).tolist())

    def boxes(objs):
        return [Rectangle((pl.x[o] - nl.obj_width[o] / 2, pl.y[o] - nl.obj_height[o] / 2),
                          nl.obj_width[o], nl.obj_height[o]) for o in objs]

    ax.add_collection(PatchCollection(boxes(nl.soft), facecolor="tab:blue", alpha=0.25, edgecolor="none"))
    good = [o for o in nl.hard if o not in bad]
    ax.add_collection(PatchCollection(boxes(good), facecolor="tab:orange", alpha=0.8, edgecolor="black", lw=0.3))
    if bad:
        ax.add_collection(PatchCollection(boxes(sorted(bad)), facecolor="tab:red", alpha=0.8, edgecolor="black",
                                          lw=0.3))
    ax.plot(pl.x[nl.ports], pl.y[nl.ports], "k.", ms=2)
    xs = np.concatenate([[0, W], pl.x[nl.hard] - nl.obj_width[nl.hard] / 2, pl.x[nl.hard] + nl.obj_width[nl.hard] / 2])
    ys = np.concatenate([[0, H], pl.y[nl.hard] - nl.obj_height[nl.hard] / 2,
                         pl.y[nl.hard] + nl.obj_height[nl.hard] / 2])
    pad = 0.02 * max(W, H)
    ax.set_xlim(xs.min() - pad, xs.max() + pad)
    ax.set_ylim(ys.min() - pad, ys.max() + pad)
    ax.set_aspect("equal")
    c = cost.costs()
    ax.set_title(title or f"{nl.name}: proxy {c.proxy_cost:.4f} (wl {c.wirelength_cost:.4f}, "
                          f"den {c.density_cost:.4f}, cong {c.congestion_cost:.4f})", fontsize=9)
    ax.set_xlabel("x (um)")
    ax.set_ylabel("y (um)")
    h, v = cost.congestion_maps()
    im = ax2.imshow(np.maximum(h, v), origin="lower", extent=(0, W, 0, H), cmap="inferno", aspect="equal")
    fig.colorbar(im, ax=ax2, fraction=0.046, label="congestion (usage / capacity)")
    ax2.set_title("congestion, max(horizontal, vertical)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
