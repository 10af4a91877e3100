"""Summarise a py-spy ``--format raw`` profile: where the server's CPU went.

Usage: ``python profile_summary.py bench-results/profile-meshsub.txt``
"""

from __future__ import annotations

import re
import sys
from collections import Counter

_LOCATION = re.compile(r"^(?P<name>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
#: Library of a frame, by the start of the path py-spy reports (it shortens them).
_GROUPS = (
    ("graphql-core", ("graphql/",)),
    ("meshsub-trio", ("meshsub_trio/", "_native_ws.py", "_native.py")),
    ("trio", ("trio/", "outcome/")),
    ("wsproto / h11", ("wsproto/", "h11/")),
    ("orjson", ("orjson",)),
    ("bench app", ("servers/", "workload.py")),
)


def _short(frame: str) -> str:
    match = _LOCATION.match(frame)
    if not match:
        return frame
    path = match["file"]
    for marker in ("site-packages/", "src/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{match['name']} ({path})"


def _group(frame: str) -> str:
    match = _LOCATION.match(frame)
    path = match["file"] if match else frame
    for name, markers in _GROUPS:
        if any(path.startswith(marker) for marker in markers):
            return name
    return "other (stdlib, builtins, GC)"


def summarise(raw: str, top: int = 20) -> str:
    """Self time by function, inclusive time by function, and self time by library."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    groups: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        leaf = frames[-1]
        own[_short(leaf)] += count
        groups[_group(_short(leaf))] += count
        for frame in {_short(f) for f in frames}:
            inclusive[frame] += count
    if not total:
        return "no samples\n"
    pct = lambda n: f"{100 * n / total:5.1f}%"  # noqa: E731
    lines = [f"{total} samples (on-CPU only)", "", "self time by library:"]
    lines += [f"  {pct(n)}  {name}" for name, n in groups.most_common()]
    lines += ["", f"self time, top {top} functions:"]
    lines += [f"  {pct(n)}  {name}" for name, n in own.most_common(top)]
    lines += ["", f"inclusive time, top {top} functions:"]
    lines += [f"  {pct(n)}  {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as file:
        print(summarise(file.read()), end="")
