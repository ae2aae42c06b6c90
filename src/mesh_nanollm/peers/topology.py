"""The room's mesh as a drawing: where each peer sits, the links between them with their round
trips, who serves whom, and each peer's recent speed as a sparkline. Pure layout from what peers
reported (`PeerView`) and their recent jobs' speeds; `_peers.html` turns it into SVG."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from mesh_nanollm.peers.schemas import PeerView

# The drawing's coordinate box; the SVG scales to its container (390 px phones included).
WIDTH, HEIGHT = 320, 200
MARGIN = 34  # room for a node and its name at the edge
# Past this many peers a circle of dots says nothing; the rest are counted, not drawn.
MAX_DRAWN = 24
SPARK_WIDTH, SPARK_HEIGHT = 72, 18
NODE_RADIUS = 9


@dataclass(slots=True)
class Node:
    peer_id: str
    username: str
    state: str
    x: float
    y: float
    serves_api: bool  # runs a job for an API client now


@dataclass(slots=True)
class Edge:
    a: Node
    b: Node
    rtt_ms: float | None  # the mean of what both ends reported; None if neither did yet
    server: Node | None = None  # the end serving a job of the other's now

    @property
    def mid(self) -> tuple[float, float]:
        return round((self.a.x + self.b.x) / 2, 1), round((self.a.y + self.b.y) / 2, 1)

    @property
    def line(self) -> tuple[float, float, float, float]:
        """From the serving end (if any) to the other, stopping short of both nodes' circles so an
        arrowhead shows."""
        start, end = (
            (self.server, self.b if self.server is self.a else self.a)
            if self.server
            else (self.a, self.b)
        )
        dx, dy = end.x - start.x, end.y - start.y
        length = math.hypot(dx, dy) or 1.0
        trim = min(NODE_RADIUS + 2, length / 3)
        ux, uy = dx / length * trim, dy / length * trim
        return (
            round(start.x + ux, 1),
            round(start.y + uy, 1),
            round(end.x - ux, 1),
            round(end.y - uy, 1),
        )


@dataclass(slots=True)
class Serving:
    server: str  # username
    requester: str | None  # username; None for an API client
    model: str


@dataclass(slots=True)
class Spark:
    points: str  # SVG polyline points, oldest job first
    last: float
    low: float
    high: float
    n: int


@dataclass(slots=True)
class Topology:
    nodes: list[Node]
    edges: list[Edge]
    serving: list[Serving]
    hidden: int  # peers not drawn (over MAX_DRAWN)
    sparks: dict[str, Spark] = field(default_factory=dict)  # by peer id
    names: dict[str, str] = field(default_factory=dict)  # usernames by peer id
    width: int = WIDTH
    height: int = HEIGHT

    @property
    def measured(self) -> list[Edge]:
        """The links with a round trip reported by at least one end."""
        return [edge for edge in self.edges if edge.rtt_ms is not None]


def _place(count: int) -> list[tuple[float, float]]:
    """Points on an ellipse, the first at the top, clockwise; one peer sits in the middle."""
    if count == 1:
        return [(WIDTH / 2, HEIGHT / 2)]
    rx, ry = WIDTH / 2 - MARGIN * 1.6, HEIGHT / 2 - MARGIN
    return [
        (
            round(WIDTH / 2 + rx * math.sin(2 * math.pi * i / count), 1),
            round(HEIGHT / 2 - ry * math.cos(2 * math.pi * i / count), 1),
        )
        for i in range(count)
    ]


def spark(speeds: list[float]) -> Spark | None:
    """A sparkline of tokens/s, oldest first, scaled from zero to the highest value."""
    if not speeds:
        return None
    high = max(speeds) or 1.0
    step = SPARK_WIDTH / max(len(speeds) - 1, 1)
    # ":.1f" writes what round(x, 1) would, at a third of the cost: a room page draws 20 points a peer.
    points = " ".join(
        [f"{i * step:.1f},{SPARK_HEIGHT - 1 - (v / high) * (SPARK_HEIGHT - 2):.1f}" for i, v in enumerate(speeds)]
    )
    if len(speeds) == 1:  # one job: a level line at its height
        points = f"0,{points.split(',')[1]} {SPARK_WIDTH},{points.split(',')[1]}"
    return Spark(
        points, round(speeds[-1], 1), round(min(speeds), 1), round(max(speeds), 1), len(speeds)
    )


def draw_mesh(peers: list[PeerView], speeds: dict[str, list[float]] | None = None) -> Topology:
    drawn = peers[:MAX_DRAWN]
    nodes = {
        p.peer_id: Node(
            p.peer_id, p.username, p.state, x, y, any(s.requester is None for s in p.serving)
        )
        for p, (x, y) in zip(drawn, _place(len(drawn)), strict=True)
    }
    names = {p.peer_id: p.username for p in peers}
    reports: dict[tuple[str, str], list[float]] = {}
    for p in drawn:
        for link in p.links:
            if link.peer_id in nodes and link.peer_id != p.peer_id:
                reports.setdefault(tuple(sorted((p.peer_id, link.peer_id))), []).append(link.rtt_ms)
    serving: list[Serving] = []
    served_pairs: dict[tuple[str, str], str] = {}
    for p in peers:
        for job in p.serving:
            serving.append(
                Serving(
                    p.username,
                    names.get(job.requester, "a peer") if job.requester else None,
                    job.model,
                )
            )
            if job.requester in nodes and p.peer_id in nodes and job.requester != p.peer_id:
                pair = tuple(sorted((p.peer_id, job.requester)))
                served_pairs[pair] = p.peer_id
                reports.setdefault(pair, [])
    edges = [
        Edge(
            nodes[a],
            nodes[b],
            round(sum(rtts) / len(rtts), 1) if rtts else None,
            nodes[served_pairs[(a, b)]] if (a, b) in served_pairs else None,
        )
        for (a, b), rtts in sorted(reports.items())
    ]
    sparks = {peer_id: s for peer_id, values in (speeds or {}).items() if (s := spark(values))}
    return Topology(list(nodes.values()), edges, serving, len(peers) - len(drawn), sparks, names)
