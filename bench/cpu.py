"""CPU time (user + system) of a benchmark's processes, read from /proc: each named server's
process tree, this run's Chromium processes by their type (browser, renderer, gpu-process,
utility: the network service among them) and Playwright's driver. Every process below the
benchmark's own counts, the servers' trees apart; the benchmark's process itself does not."""

from __future__ import annotations

import os
from pathlib import Path


def cpu_seconds(servers: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far, by kind; `servers` names the root pid of each server's tree."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    seconds: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        pid = int(stat.parent.name)
        parents[pid] = int(fields[1])
        seconds[pid] = (int(fields[11]) + int(fields[12])) / tick
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)

    def subtree(root: int) -> list[int]:
        pids = [root]
        for pid in pids:
            pids.extend(children.get(pid, []))
        return pids

    used: dict[str, float] = {}
    counted = {os.getpid()}
    for name, root in servers.items():
        tree = subtree(root)
        used[name] = sum(seconds.get(pid, 0.0) for pid in tree)
        counted.update(tree)
    for pid in set(subtree(os.getpid())) - counted:
        try:
            # Chromium's children rewrite theirs into one string: split on spaces too.
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").split()
        except OSError:
            continue
        if not argv:  # a zombie: exited, not yet reaped
            continue
        if argv[0].endswith((b"chromium", b"chrome")):
            kind = next((a[7:].decode() for a in argv if a.startswith(b"--type=")), "browser")
        else:
            kind = "driver"  # Playwright's, which relays the bench's calls into the pages
        used[kind] = used.get(kind, 0.0) + seconds[pid]
    return used


def cpu_used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {key: after[key] - before.get(key, 0.0) for key in after}
