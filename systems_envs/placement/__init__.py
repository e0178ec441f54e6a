"""Device placement and memory mapping: simulators, baselines and gymnasium environments.

Importing this package registers ``DevicePlacement-v0`` and ``MemoryPlacement-v0``.
"""
import gymnasium

from systems_envs.placement.devices import PRESETS, DeviceSet, get_device_set
from systems_envs.placement.simulator import (BatchResult, CompiledGraph, SimResult, compile_graph, evaluate_many,
                                              simulate, step_time)

for _id, _entry in (("DevicePlacement-v0", "systems_envs.placement.env:DevicePlacementEnv"),
                    ("MemoryPlacement-v0", "systems_envs.placement.memory_env:MemoryPlacementEnv")):
    if _id not in gymnasium.registry:
        gymnasium.register(id=_id, entry_point=_entry)

__all__ = ["PRESETS", "DeviceSet", "get_device_set", "BatchResult", "CompiledGraph", "SimResult", "compile_graph",
           "evaluate_many", "simulate", "step_time"]
