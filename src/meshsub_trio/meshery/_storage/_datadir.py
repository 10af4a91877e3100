"""Where the embedded Meshery database lives by default (the XDG base directory rules).

Why a function: the CLI asks for it only when neither ``--data-dir`` nor
``MESHSUB_DATA_DIR`` is given, and the environment is read at that moment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

#: ``data_dir`` value that keeps nothing: the model lives in memory only.
MEMORY = ":memory:"
#: The directory name under the user's data home.
APP_DIR = "meshsub-trio"


def default_data_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_DATA_HOME/meshsub-trio``, else ``~/.local/share/meshsub-trio``.

    The XDG spec says a relative ``XDG_DATA_HOME`` is invalid and must be
    ignored, so only an absolute one is used.
    """
    env = os.environ if environ is None else environ
    xdg = env.get("XDG_DATA_HOME", "")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / APP_DIR
    home = env.get("HOME") or os.path.expanduser("~")
    return Path(home) / ".local" / "share" / APP_DIR
