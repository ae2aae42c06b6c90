"""The peers panel draws the room's mesh from what peers reported: links with their round trips,
who serves whom, and each peer's recent speed as a sparkline, with the same in words."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from html import unescape

from conftest import unique_name
from litestar.testing import AsyncTestClient

from mesh_nanollm.peers.schemas import LinkRtt, PeerView, Served
from mesh_nanollm.peers.topology import MAX_DRAWN, draw_mesh
from mesh_nanollm.tables import PeerSession, Room, User

HTMX = {"HX-Request": "true"}


async def make_room(client: AsyncTestClient) -> tuple[str, int, int, str]:
    response = await client.post(
        "/rooms", data={"name": unique_name("mesh")}, follow_redirects=False
    )
    slug = response.headers["location"].removeprefix("/rooms/")
    room = (await Room.select(Room.id).where(Room.slug == slug).first())["id"]
    me = await User.select(User.id, User.username).order_by(User.id, ascending=False).first()
    return slug, room, me["id"], me["username"]


async def add_peer(room: int, user: int, **status: object) -> str:
    now = datetime.now(UTC)
    peer = PeerSession(
        room=room, user=user, backend="wasm", connected_at=now, last_seen_at=now, **status
    )
    await peer.save()
    return str(peer.peer_id)


async def run_job(client: AsyncTestClient, slug: str, peer: str, decode_ms: float, *, worker: str | None = None) -> None:
    """A job of `peer`'s page, run there (or on `worker`), recorded through the jobs API as the page
    records it: 11 tokens, 10 of them after the first in `decode_ms` on the run's own clock."""
    created = await client.post(
        "/api/jobs", json={"room": slug, "model": "tiny-gpt2", "prompt": "p", "requester_peer": peer}
    )
    assert created.status_code == 201, created.text
    job = created.json()["id"]
    running = {"status": "running"} | ({"worker_peer": worker} if worker else {})
    for body in (running, {"status": "succeeded", "token_count": 11, "decode_ms": decode_ms, "decode_tokens": 10}):
        response = await client.patch(f"/api/jobs/{job}", json=body)
        assert response.status_code == 200, response.text


def text(html: str) -> str:
    return unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))).strip()


async def test_panel_draws_links_round_trips_and_who_serves_whom(
    user_client: AsyncTestClient,
) -> None:
    slug, room, user, username = await make_room(user_client)
    a = await add_peer(room, user, state="busy")
    b = await add_peer(room, user)
    c = await add_peer(room, user)
    # a and b both measured their link (2 ms and 4 ms: drawn as 3.0); c reported a link to a only.
    await PeerSession.update(
        {
            PeerSession.links: [{"peer_id": b, "rtt_ms": 2.0}, {"peer_id": c, "rtt_ms": 7.5}],
            PeerSession.serving: [{"model": "tiny-gpt2", "requester": b}],
        }
    ).where(PeerSession.peer_id == a)
    await PeerSession.update({PeerSession.links: [{"peer_id": a, "rtt_ms": 4.0}]}).where(
        PeerSession.peer_id == b
    )

    fragment = (await user_client.get(f"/rooms/{slug}/peers", headers=HTMX)).text

    drawing = re.search(
        r'<figure class="topology" data-testid="topology".*?</figure>', fragment, re.DOTALL
    ).group(0)
    nodes = re.findall(
        r'data-testid="topology-peer" data-peer-id="([^"]+)" data-state="(\w+)"', drawing
    )
    assert nodes == [(a, "busy"), (b, "idle"), (c, "idle")]
    links = {
        frozenset((x, y)): (rtt, server)
        for x, y, rtt, server in re.findall(
            r'data-testid="topology-link" data-a="([^"]+)" data-b="([^"]+)"\s+data-rtt="([^"]*)" data-server="([^"]*)"',
            drawing,
        )
    }
    assert links == {frozenset((a, b)): ("3.0", a), frozenset((a, c)): ("7.5", "")}
    assert drawing.count('marker-end="url(#topology-arrow)"') == 1  # a serves b
    caption = text(
        re.search(r'data-testid="topology-text">(.*?)</figcaption>', drawing, re.DOTALL).group(1)
    )
    assert f"Serving now: {username} runs tiny-gpt2 for {username}." in caption
    assert caption.count("ms") == 2 and "3.0 ms" in caption and "7.5 ms" in caption
    assert "3 peers, 2 links with a measured round trip, 1 job served now" in drawing
    row_a = re.search(rf'data-testid="peer" data-peer-id="{a}".*?</li>', fragment, re.DOTALL).group(
        0
    )
    assert "serving" in text(
        re.search(r'data-testid="peer-serving">(.*?)</div>', row_a, re.DOTALL).group(1)
    )


async def test_peer_rows_show_recent_speed_as_a_sparkline(user_client: AsyncTestClient) -> None:
    slug, room, user, _ = await make_room(user_client)
    fast = await add_peer(room, user)
    idle = await add_peer(room, user)
    # Three jobs run on `fast`, oldest first: 10, 40 and 20 tokens/s; one of them `idle`'s, run by
    # `fast` for it over the mesh (the speed is the worker's); and one of `idle`'s too short to
    # measure, run on its own page.
    await run_job(user_client, slug, fast, 1000)
    await run_job(user_client, slug, idle, 250, worker=fast)
    await run_job(user_client, slug, fast, 500)
    await run_job(user_client, slug, idle, 10)

    fragment = (await user_client.get(f"/rooms/{slug}/peers", headers=HTMX)).text

    # Each peer once, oldest first, however many speeds it has.
    assert re.findall(r'data-testid="peer" data-peer-id="([^"]+)"', fragment) == [str(fast), str(idle)]
    row = re.search(
        rf'data-testid="peer" data-peer-id="{fast}".*?</li>', fragment, re.DOTALL
    ).group(0)
    label = re.search(r'data-testid="peer-spark".*?aria-label="([^"]+)"', row, re.DOTALL).group(1)
    assert label == "Speed of its last 3 jobs: 10.0 to 40.0 tok/s, latest 20.0"
    points = [
        tuple(map(float, p.split(",")))
        for p in re.search(r'points="([^"]+)"', row).group(1).split()
    ]
    assert [x for x, _ in points] == [0.0, 36.0, 72.0]
    assert points[1][1] < points[2][1] < points[0][1]  # the fastest job is drawn highest
    assert "peer-spark" not in re.search(
        rf'data-testid="peer" data-peer-id="{idle}".*?</li>', fragment, re.DOTALL
    ).group(0)


async def test_sparkline_shows_the_latest_twenty_measured_jobs(user_client: AsyncTestClient) -> None:
    slug, room, user, _ = await make_room(user_client)
    peer = await add_peer(room, user)
    # 25 measured jobs, 1 to 25 tok/s from the oldest to the newest, then one too short to
    # measure: it counts as a job run, and is not drawn.
    for n in range(1, 26):
        await run_job(user_client, slug, peer, 10_000 / n)
    await run_job(user_client, slug, peer, 10)

    fragment = (await user_client.get(f"/rooms/{slug}/peers", headers=HTMX)).text

    row = re.search(rf'data-testid="peer" data-peer-id="{peer}".*?</li>', fragment, re.DOTALL).group(0)
    label = re.search(r'data-testid="peer-spark".*?aria-label="([^"]+)"', row, re.DOTALL).group(1)
    assert label == "Speed of its last 20 jobs: 6.0 to 25.0 tok/s, latest 25.0"


async def test_a_lone_peer_is_drawn_alone_and_said_so(user_client: AsyncTestClient) -> None:
    slug, room, user, _ = await make_room(user_client)
    await add_peer(room, user)
    page = (await user_client.get(f"/rooms/{slug}")).text
    assert 'data-testid="topology"' in page and page.count('data-testid="topology-peer"') == 1
    assert "Nobody is serving anyone right now." in text(page)


def test_a_crowd_is_drawn_up_to_the_cap_and_the_rest_counted() -> None:
    crowd = [
        PeerView(f"00000000-0000-4000-8000-{n:012d}", f"p{n}", "wasm", "idle", [], 0, 0.0)
        for n in range(MAX_DRAWN + 6)
    ]
    # The last peer links to the first, and serves it: neither the link nor the arrow is drawn
    # (one end is not), but the serving is still said in words.
    crowd[-1].links = [LinkRtt(crowd[0].peer_id, 3.0)]
    crowd[-1].serving = [Served("tiny-gpt2", crowd[0].peer_id)]

    mesh = draw_mesh(crowd)

    assert (len(mesh.nodes), mesh.hidden, mesh.edges) == (MAX_DRAWN, 6, [])
    assert [(s.server, s.requester) for s in mesh.serving] == [(f"p{MAX_DRAWN + 5}", "p0")]
    positions = {(node.x, node.y) for node in mesh.nodes}
    assert len(positions) == MAX_DRAWN  # nobody drawn over anybody
    assert all(0 < x < mesh.width and 0 < y < mesh.height for x, y in positions)


async def test_the_panel_follows_every_change_the_room_page_and_fragment_share(
    user_client: AsyncTestClient,
) -> None:
    """The panel is rendered once for what it shows: a state change, a new peer or only a new
    job's speed (the same peers) each give a new panel, on the fragment and on the page."""
    slug, room, user, _ = await make_room(user_client)
    peer = await add_peer(room, user)

    async def fragment() -> str:
        return (await user_client.get(f"/rooms/{slug}/peers", headers=HTMX)).text

    def states(html: str) -> list[tuple[str, str]]:
        return re.findall(r'data-testid="peer" data-peer-id="([^"]+)" data-state="(\w+)"', html)

    first = await fragment()
    assert states(first) == [(peer, "idle")] and await fragment() == first
    assert first in (await user_client.get(f"/rooms/{slug}")).text

    await PeerSession.update({PeerSession.state: "busy"}).where(PeerSession.peer_id == peer)
    assert states(await fragment()) == [(peer, "busy")]

    other = await add_peer(room, user)
    assert states(await fragment()) == [(peer, "busy"), (other, "idle")]

    assert "peer-spark" not in await fragment()
    await run_job(user_client, slug, peer, 500)
    changed = await fragment()
    assert states(changed) == [(peer, "busy"), (other, "idle")]
    row = re.search(rf'data-peer-id="{peer}".*?</li>', changed, re.DOTALL).group(0)
    assert 'aria-label="Speed of its last 1 job: 20.0 to 20.0 tok/s, latest 20.0"' in row
    assert changed in (await user_client.get(f"/rooms/{slug}")).text
