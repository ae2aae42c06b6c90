"""Summarise a py-spy raw (collapsed) profile: where the relay's time goes, by layer and function.

    python bench/signaling/profile_summary.py bench/results/profile-ours-50.txt
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

LAYERS = [
    ("asyncio/uvloop (tasks, futures, timeouts, queues)", re.compile(r"asyncio/|uvloop|wait_for|ensure_future|create_task")),
    ("engineio", re.compile(r"engineio/")),
    ("socketio", re.compile(r"socketio/")),
    ("our app (mesh_nanollm)", re.compile(r"mesh_nanollm/")),
    ("JSON (msgspec)", re.compile(r"msgspec|json")),
    ("logging", re.compile(r"logging/")),
]


def frames(stack: str) -> list[str]:
    return [f for f in stack.split(";") if f]


def main(path: str) -> None:
    self_by_layer: Counter[str] = Counter()
    self_by_func: Counter[str] = Counter()
    total = 0
    for line in Path(path).read_text().splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        leaf = frames(stack)[-1] if frames(stack) else "?"
        self_by_func[leaf] += n
        for name, pattern in LAYERS:
            if pattern.search(leaf):
                self_by_layer[name] += n
                break
        else:
            self_by_layer["no Python frame (Granian runtime threads, native code)" if leaf == "?" else "other Python (Granian ASGI glue)"] += n
    print(f"{total} samples")
    print("\nself time by layer:")
    for name, n in self_by_layer.most_common():
        print(f"  {100 * n / total:5.1f}%  {name}")
    print("\nhottest functions (self):")
    for name, n in self_by_func.most_common(25):
        print(f"  {100 * n / total:5.1f}%  {name}")


if __name__ == "__main__":
    main(sys.argv[1])
