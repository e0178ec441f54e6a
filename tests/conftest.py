"""Test-wide settings: deterministic hypothesis runs, JAX on the CPU."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

from hypothesis import settings  # noqa: E402

settings.register_profile("default", derandomize=True, deadline=None, print_blob=True)
settings.load_profile("default")
