"""Real simulators of systems environments (NumPy only): graph IR, rewriting, placement,
chip macro placement."""

import gymnasium as _gym

if "GraphRewrite-v0" not in _gym.registry:
    _gym.register(id="GraphRewrite-v0", entry_point="systems_envs.rewrite.env:GraphRewriteEnv")
for _id, _entry in (("DevicePlacement-v0", "systems_envs.placement.env:DevicePlacementEnv"),
                    ("MemoryPlacement-v0", "systems_envs.placement.memory_env:MemoryPlacementEnv"),
                    ("MacroPlacement-v0", "systems_envs.chip.env:MacroPlacementEnv")):
    if _id not in _gym.registry:
        _gym.register(id=_id, entry_point=_entry)
