"""The worker as a person runs it: `mesh-nanollm worker` in a subprocess, against a live server."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from conftest import LiveServer
from support.accounts import Account, create_room, sign_up
from support.servers import serving

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MODEL = "tiny-gpt2"
# Short waits, so a job nobody takes fails fast.
GATEWAY_ENV = {"GATEWAY_QUEUE_WAIT": "5", "GATEWAY_ACK_TIMEOUT": "5", "GATEWAY_STALL_TIMEOUT": "10"}


class Worker:
    """`mesh-nanollm worker ARGS`, its output read line by line as it comes."""

    def __init__(self, *args: str, **env: str) -> None:
        full_env = os.environ | {"MODELS_DIR": str(PROJECT_ROOT / "models"),
                                 "PYTHONUNBUFFERED": "1"} | env
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from mesh_nanollm.cli import main; main()", "worker", *args],
            env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.lines: list[str] = []
        self._new: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._new.put(line.rstrip("\n"))
        self._new.put(None)

    def expect(self, pattern: str, timeout: float = 30) -> str:
        """The next line matching `pattern` (the lines before it are kept in `lines`)."""
        while True:
            try:
                line = self._new.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no line like {pattern!r} within {timeout} s; output:\n" + "\n".join(self.lines)) from None
            if line is None:
                raise AssertionError(f"the worker exited before a line like {pattern!r}; output:\n" + "\n".join(self.lines))
            self.lines.append(line)
            if re.search(pattern, line):
                return line

    def finish(self, timeout: float = 60) -> int:
        """Wait for the exit; every remaining line lands in `lines`."""
        code = self.process.wait(timeout)
        while (line := self._new.get(timeout=10)) is not None:
            self.lines.append(line)
        return code

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="module")
def worker_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with serving(tmp_path_factory.mktemp("worker"), **GATEWAY_ENV) as server:
        yield server


@dataclass
class Room:
    server: LiveServer
    account: Account
    slug: str

    @property
    def url(self) -> str:
        return self.server.url

    def worker(self, *args: str, **env: str) -> Worker:
        return Worker("--server", self.url, "--token", self.account.token, "--room", self.slug, *args, **env)


@pytest_asyncio.fixture
async def room(worker_server: LiveServer) -> AsyncIterator[Room]:
    account = await sign_up(worker_server.url, "wk")
    made = await create_room(worker_server.url, account, "worker room", private=False)
    yield Room(worker_server, account, made["slug"])
