"""Device-set presets for the placement simulator.

A :class:`DeviceSet` is a list of devices (each with a :class:`DeviceSpec` of the cost
model, whose ``memory_bytes`` is the device's memory capacity) and a point-to-point link
between every ordered pair of devices, with a bandwidth (bytes/s) and a latency (s).
Links are full duplex: ``a -> b`` and ``b -> a`` are two independent links.

Presets (figures are datasheet-like, not measured):

* ``gpu2``, ``gpu4``, ``gpu8``: identical V100-class GPUs (16 GiB each) joined by
  NVLink-class links (25 GB/s, 10 us latency).
* ``cpu+gpu4``: one CPU (the ``cpu`` spec, 64 GiB) and four V100 GPUs; GPU-GPU links as
  above, CPU-GPU links PCIe-class (12 GB/s, 20 us latency). Device 0 is the CPU.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from systems_envs.graph.cost import DeviceSpec, get_device

NVLINK = (25e9, 10e-6)
PCIE = (12e9, 20e-6)


@dataclasses.dataclass(frozen=True)
class DeviceSet:
    """Devices and links.

    Attributes:
      name: preset name.
      specs: one DeviceSpec per device (``memory_bytes`` is the capacity).
      bandwidth: [D, D] link bandwidth in bytes/s (diagonal unused).
      latency: [D, D] link latency in seconds (diagonal unused).
    """

    name: str
    specs: tuple[DeviceSpec, ...]
    bandwidth: np.ndarray
    latency: np.ndarray

    def __len__(self) -> int:
        return len(self.specs)

    @property
    def names(self) -> list[str]:
        """Display names ``<spec>:<index>``."""
        return [f"{s.name}:{i}" for i, s in enumerate(self.specs)]

    @property
    def capacity(self) -> np.ndarray:
        """[D] memory capacity in bytes."""
        return np.array([s.memory_bytes for s in self.specs], dtype=np.float64)

    def with_memory(self, memory_bytes: float) -> "DeviceSet":
        """The same set with every device's capacity replaced (for tests and what-ifs)."""
        specs = tuple(dataclasses.replace(s, memory_bytes=float(memory_bytes)) for s in self.specs)
        return dataclasses.replace(self, name=f"{self.name}@{memory_bytes / 2**30:g}GiB", specs=specs)


def make_device_set(name: str, specs: list[DeviceSpec | str], link=NVLINK,
                    host_link=PCIE, host: set[int] = frozenset()) -> DeviceSet:
    """Build a set with ``link`` (bandwidth B/s, latency s) between devices, and
    ``host_link`` on every link that touches a device index in ``host``."""
    specs = tuple(get_device(s) for s in specs)
    d = len(specs)
    bw = np.full((d, d), link[0], dtype=np.float64)
    lat = np.full((d, d), link[1], dtype=np.float64)
    for h in host:
        bw[h, :] = bw[:, h] = host_link[0]
        lat[h, :] = lat[:, h] = host_link[1]
    np.fill_diagonal(bw, np.inf)
    np.fill_diagonal(lat, 0.0)
    return DeviceSet(name, specs, bw, lat)


PRESETS = {
    "gpu2": lambda: make_device_set("gpu2", ["v100"] * 2),
    "gpu4": lambda: make_device_set("gpu4", ["v100"] * 4),
    "gpu8": lambda: make_device_set("gpu8", ["v100"] * 8),
    "cpu+gpu4": lambda: make_device_set("cpu+gpu4", ["cpu"] + ["v100"] * 4, host={0}),
}


def get_device_set(name: str | DeviceSet) -> DeviceSet:
    """Look up a preset by name (a DeviceSet passes through); ValueError names the known ones."""
    if isinstance(name, DeviceSet):
        return name
    try:
        return PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown device preset {name!r} (known: {', '.join(PRESETS)})") from None
