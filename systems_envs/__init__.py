"""Real simulators of systems environments (NumPy only): graph IR, rewriting, placement."""
