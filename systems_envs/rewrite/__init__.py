"""Graph rewriting: verified substitution rules, candidate matching, search, and the gymnasium environment."""
