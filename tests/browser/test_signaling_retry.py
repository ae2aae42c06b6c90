"""signaling.js's retry loop in a real page, against a stand-in Socket.IO socket whose join answers
the test scripts: which failures are tried again (a server error, a dropped connection, a server
that says nothing) and which stop it (a room closed to this user). The real server's side of the
same loop is in tests/mesh/test_connection.py."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import LiveServer
from playwright.async_api import Page

pytestmark = pytest.mark.browser

# A stand-in for socket.io-client's socket: connect() "connects" at once (except the first
# `silent` times: a server that took the websocket and said nothing), each join_room gets the next
# scripted answer, and drop() is a lost transport.
HARNESS = """async ([answers, silent]) => {
  const { RoomConnection } = await import("/static/js/signaling.js");
  class StandInSocket {
    handlers = {}; connects = 0; connected = false; active = false;
    on(event, fn) { (this.handlers[event] ??= []).push(fn); }
    fire(event, ...args) { for (const fn of this.handlers[event] ?? []) fn(...args); }
    connect() {
      this.connects += 1;
      this.active = true;
      if (this.connects > silent) setTimeout(() => { this.connected = true; this.fire("connect"); }, 0);
    }
    disconnect() {
      const was = this.connected;
      this.connected = this.active = false;
      if (was) this.fire("disconnect", "io client disconnect");
    }
    drop() { this.connected = false; this.fire("disconnect", "transport close"); }
    timeout() { return this; }
    emitWithAck() { return Promise.resolve(answers.shift()); }
    emit() {}
  }
  const socket = new StandInSocket();
  const conn = new RoomConnection(() => socket, "room", {});
  const states = [];
  conn.addEventListener("connection", (e) => states.push([e.detail.state, e.detail.attempt, e.detail.reason]));
  const opened = conn.open().then(() => "joined", (error) => `rejected: ${error.message} (refused: ${error.refused})`);
  Object.assign(window, { socket, conn, states, opened });
}"""

JOINED = {"peer_id": "00000000-0000-4000-8000-000000000001", "peers": [], "ice_servers": [], "ice_ttl_s": None}


async def start(page: Page, server: LiveServer, answers: list[Any], silent: int = 0) -> None:
    await page.goto(f"{server.url}/login")  # any page of the app's origin can host the modules
    await page.evaluate(HARNESS, [answers, silent])


async def wait_for_state(page: Page, state: str, timeout: float = 20_000) -> list[list[Any]]:
    await page.wait_for_function("state => states.some(([s]) => s === state)", arg=state, timeout=timeout)
    return await page.evaluate("states")


async def test_failed_joins_and_drops_are_retried_and_a_closed_room_stops_it(live_server: LiveServer, page: Page) -> None:
    internal = {"error": {"code": "internal", "message": "Something went wrong on our side."}}
    forbidden = {"error": {"code": "forbidden", "message": "This room is private."}}
    await start(page, live_server, [internal, JOINED, forbidden])

    await wait_for_state(page, "joined")
    assert await page.evaluate("opened") == "joined"
    await page.evaluate("socket.drop()")
    states = await wait_for_state(page, "refused")
    assert states == [
        ["connecting", 1, ""],
        ["connecting", 2, "Something went wrong on our side."],
        ["joined", 2, ""],
        ["reconnecting", 1, "transport close"],
        ["refused", 1, "This room is private."],
    ]
    await page.wait_for_timeout(2000)  # longer than the next backoff delays would be
    assert await page.evaluate("socket.connects") == 3  # nothing tried after the refusal
    assert await page.evaluate("[conn.state, conn.joined]") == ["refused", False]


async def test_a_first_join_refused_rejects_open_as_a_refusal(live_server: LiveServer, page: Page) -> None:
    await start(page, live_server, [{"error": {"code": "not_found", "message": "No room “room”."}}])
    await wait_for_state(page, "refused")
    assert await page.evaluate("opened") == "rejected: No room “room”. (refused: true)"
    assert await page.evaluate("socket.connects") == 1


async def test_a_try_the_server_never_answers_counts_as_failed(live_server: LiveServer, page: Page) -> None:
    await start(page, live_server, [JOINED], silent=1)
    # The first try never connects; signaling.js gives up on it after 25 s and tries again.
    states = await wait_for_state(page, "joined", timeout=60_000)
    assert states[:2] == [["connecting", 1, ""], ["connecting", 2, "no answer from the server"]]
    assert await page.evaluate("socket.connects") == 2
