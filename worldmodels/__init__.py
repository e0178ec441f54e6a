"""worldmodels package."""
