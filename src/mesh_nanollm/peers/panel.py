"""The room page's peers panel (`_peers.html`) as HTML, rendered once for what it shows. When a
peer changes, every page open in its room reloads the panel (`peers-changed`) and all of them ask
for the same HTML; drawing the mesh and rendering the panel was a fifth of a room page's CPU."""

from __future__ import annotations

from collections import OrderedDict

import msgspec
from jinja2 import Environment
from markupsafe import Markup

from mesh_nanollm.peers.service import live_peers_and_speeds
from mesh_nanollm.peers.topology import draw_mesh
from mesh_nanollm.tables import Room

# Rooms whose latest panel is kept: one entry each, so a room of 500 peers keeps one panel.
ROOMS_KEPT = 256


class PeersPanel:
    def __init__(self) -> None:
        # By room slug: what the panel showed, encoded, and its HTML.
        self._latest: OrderedDict[str, tuple[bytes, Markup]] = OrderedDict()

    async def render(self, templates: Environment, room: Room, context: dict[str, object]) -> Markup:
        """The panel of the room's live peers and their recent speeds; `context` is what the
        template needs besides them (the request, for `url_for`)."""
        listed = await live_peers_and_speeds(room)
        peers = [peer for peer, _ in listed]
        speeds = {peer.peer_id: values for peer, values in listed if values}
        shown = msgspec.msgpack.encode((peers, speeds))
        latest = self._latest.get(room.slug)
        if latest is not None and latest[0] == shown:
            self._latest.move_to_end(room.slug)
            return latest[1]
        html = Markup(  # the template escapes what it shows
            templates.get_template("_peers.html").render(
                context | {"room": room, "peers": peers, "mesh": draw_mesh(peers, speeds)}
            )
        )
        self._latest[room.slug] = (shown, html)
        self._latest.move_to_end(room.slug)
        if len(self._latest) > ROOMS_KEPT:
            self._latest.popitem(last=False)
        return html
