"""Shared entry-point wrapper for the command-line tools.

Bad input (a missing or corrupt file, an unknown name, a malformed graph, a bad flag
value) is reported as one line ``error: <message>`` on stderr with exit status 2, never
as a traceback. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import sys
from typing import Callable

from systems_envs.graph.ir import GraphError


def run_main(main: Callable[[list[str] | None], object], argv: list[str] | None = None) -> None:
    """Run ``main(argv)``; turn user-input errors into a one-line message and exit 2."""
    try:
        main(argv)
    except (GraphError, ValueError, FileNotFoundError, IsADirectoryError, PermissionError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
