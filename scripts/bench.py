"""Single entry point for the benchmark: ``python scripts/bench.py [--quick]``.

Runs ``scripts/bench/run`` (which sets up its own environment) with the same arguments.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main() -> None:
    run = Path(__file__).resolve().parent / "bench" / "run"
    os.execvp("bash", ["bash", str(run), *sys.argv[1:]])


if __name__ == "__main__":
    main()
