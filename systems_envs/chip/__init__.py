"""Chip macro placement with circuit_training's formats and proxy cost (NumPy only).

Modules: :mod:`netlist` (netlist reader), :mod:`plc` (.plc reader/writer), :mod:`cost`
(proxy cost, full and incremental), :mod:`force_directed` (soft-macro placement),
:mod:`legality` (legal cells, legalisation, circuit_training's macro order),
:mod:`generator` (synthetic netlists), :mod:`baselines` (random, greedy, annealing),
:mod:`env` (``MacroPlacement-v0``).
"""
