"""The Socket.IO payloads, client to server and back, as msgspec Structs with their size caps."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from mesh_nanollm.peers.schemas import PeerView

# An SDP is a few KB (about 2-6 KB with audio-less data channels); 16 KiB leaves room for
# many ICE candidates inlined without letting a peer push megabytes through the relay.
SDP_MAX = 16 * 1024
CANDIDATE_MAX = 1024
PEER_ID_PATTERN = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"

# Strings the server stores or shows (Postgres refuses NUL in text and JSON, and no name, model id
# or user agent needs a control character) are matched against this.
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"

PeerId = Annotated[str, msgspec.Meta(pattern=PEER_ID_PATTERN)]
Backend = Annotated[str, msgspec.Meta(max_length=16, pattern="^[a-z0-9_-]*$")]
ModelId = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=PRINTABLE)]
WarmModels = Annotated[list[ModelId], msgspec.Meta(max_length=32)]
PeerState = Literal["idle", "busy", "loading", "paused"]
# Why a peer serves nobody for now (docs/mesh.md, "Sharing"): its tab is hidden, its battery is low,
# its WebGPU device was lost, or its user has not chosen to share.
PauseReason = Literal["hidden", "battery", "device_lost", "sharing_off"]


def check_pause(state: str, pause_reason: str | None) -> None:
    """A paused peer says why, and only a paused one: the peers panel shows the reason."""
    if (state == "paused") != (pause_reason is not None):
        raise ValueError("`pause_reason` is required with state `paused`, and only then")


class Capabilities(msgspec.Struct):
    """What a peer says about itself when it joins; unknown keys are ignored for forward compatibility."""

    backend: Backend = ""
    user_agent: Annotated[str, msgspec.Meta(max_length=300, pattern=PRINTABLE)] = ""
    state: PeerState = "idle"
    pause_reason: PauseReason | None = None
    models_warm: WarmModels = []

    def __post_init__(self) -> None:
        check_pause(self.state, self.pause_reason)


class JoinRoom(msgspec.Struct):
    room: Annotated[str, msgspec.Meta(min_length=1, max_length=48, pattern=PRINTABLE)]
    capabilities: Capabilities = msgspec.field(default_factory=Capabilities)


# A page links to at most 16 peers (links.js) and serves at most as many jobs as it holds links
# (its user's max_jobs is far lower); the caps keep a status a few hundred bytes.
LINKS_MAX = 16
SERVING_MAX = 16


class LinkReport(msgspec.Struct, forbid_unknown_fields=True):
    """One of the reporting peer's open data channels and its smoothed round trip (ping/pong)."""

    peer_id: PeerId
    rtt_ms: Annotated[float, msgspec.Meta(ge=0, le=60_000)]


class ServedReport(msgspec.Struct, forbid_unknown_fields=True):
    """A job the reporting peer runs now: for `requester` (a peer of the room), or for an API
    client of the server (`requester` null)."""

    model: ModelId
    requester: PeerId | None = None


class Status(msgspec.Struct):
    state: PeerState = "idle"
    backend: Backend = ""
    models_warm: WarmModels = []
    queue: Annotated[int, msgspec.Meta(ge=0, le=100_000)] = 0
    tok_s: Annotated[float, msgspec.Meta(ge=0, le=1_000_000)] = 0.0
    pause_reason: PauseReason | None = None
    links: Annotated[list[LinkReport], msgspec.Meta(max_length=LINKS_MAX)] = []
    serving: Annotated[list[ServedReport], msgspec.Meta(max_length=SERVING_MAX)] = []

    def __post_init__(self) -> None:
        check_pause(self.state, self.pause_reason)


class Signal(msgspec.Struct):
    """`signal {to, kind, data}`; any `from` the client adds is ignored, the server stamps its own."""

    to: PeerId
    kind: Literal["offer", "answer", "candidate"]
    data: dict[str, object] | None = None


class SessionDescription(msgspec.Struct, forbid_unknown_fields=True):
    """RTCSessionDescription.toJSON(): forwarded as sent, so nothing else may ride along."""

    type: Literal["offer", "answer", "pranswer", "rollback"]
    sdp: Annotated[str, msgspec.Meta(max_length=SDP_MAX)] = ""


class IceCandidate(msgspec.Struct, forbid_unknown_fields=True):
    """RTCIceCandidate.toJSON(); an empty `candidate` marks the end of gathering."""

    candidate: Annotated[str, msgspec.Meta(max_length=CANDIDATE_MAX)] = ""
    # camelCase: these are the browser's field names, forwarded as they are.
    sdpMid: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    sdpMLineIndex: Annotated[int, msgspec.Meta(ge=0, le=1024)] | None = None
    usernameFragment: Annotated[str, msgspec.Meta(max_length=256)] | None = None


class JoinAck(msgspec.Struct):
    peer_id: str
    peers: list[PeerView]
    ice_servers: list[dict[str, object]]
    # Seconds until the TURN credentials in `ice_servers` expire; None when nothing in them does.
    ice_ttl_s: int | None = None


class RefreshIce(msgspec.Struct, forbid_unknown_fields=True):
    """`refresh_ice {}`: fresh TURN credentials for a peer whose tab outlives them. Nothing rides
    along: the credentials are made for the connection's own user."""


class IceAck(msgspec.Struct):
    """The answer to `refresh_ice`: what a join ack carries about ICE, made anew."""

    ice_servers: list[dict[str, object]]
    ice_ttl_s: int | None = None


# API jobs (docs/realtime.md, "API jobs"): what a peer sends back about a job the server gave it.
JobId = Annotated[str, msgspec.Meta(pattern=PEER_ID_PATTERN)]
# A batch of ~33 ms of tokens is a few dozen characters; a whole answer is at most 4096 tokens.
TOKEN_TEXT_MAX = 16 * 1024
ANSWER_TEXT_MAX = 128 * 1024


class JobToken(msgspec.Struct):
    job_id: JobId
    seq: Annotated[int, msgspec.Meta(ge=1, le=100_000)]
    text: Annotated[str, msgspec.Meta(max_length=TOKEN_TEXT_MAX)]


class JobMetrics(msgspec.Struct):
    tokens: Annotated[int, msgspec.Meta(ge=0, le=100_000)] = 0
    reason: Literal["stop", "length", "cancelled"] = "stop"
    prompt_tokens: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] | None = None
    ttft_ms: Annotated[float, msgspec.Meta(ge=0, le=86_400_000)] | None = None
    tok_s: Annotated[float, msgspec.Meta(ge=0, le=1_000_000)] | None = None
    total_ms: Annotated[float, msgspec.Meta(ge=0, le=86_400_000)] | None = None
    backend: Backend = ""


class JobDone(msgspec.Struct):
    job_id: JobId
    text: Annotated[str, msgspec.Meta(max_length=ANSWER_TEXT_MAX)] = ""
    metrics: JobMetrics = msgspec.field(default_factory=JobMetrics)


class JobError(msgspec.Struct):
    job_id: JobId
    code: Annotated[str, msgspec.Meta(max_length=64, pattern=PRINTABLE)] = "internal"
    message: Annotated[str, msgspec.Meta(max_length=2000)] = ""


class JobRefusal(msgspec.Struct):
    code: Annotated[str, msgspec.Meta(max_length=64)] = "invalid"
    message: Annotated[str, msgspec.Meta(max_length=2000)] = ""


class JobAck(msgspec.Struct):
    """A peer's answer to `job_run`: `{ok: true}`, or `{error: {code, message}}`."""

    ok: bool = False
    error: JobRefusal | None = None
