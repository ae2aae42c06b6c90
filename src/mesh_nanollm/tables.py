"""The schema: every table the app stores, in one place."""

from __future__ import annotations

from piccolo.columns import (
    JSON,
    UUID,
    BigInt,
    Boolean,
    Bytea,
    ForeignKey,
    Integer,
    OnDelete,
    Real,
    Text,
    Timestamptz,
    Varchar,
)
from piccolo.columns.defaults.uuid import UUID4
from piccolo.table import Table


class User(Table, tablename="app_user"):
    username = Varchar(length=32, unique=True)
    password_hash = Varchar(length=80)
    created_at = Timestamptz()
    # Whether this user's pages serve other people's jobs, and within which limits. Off until the
    # user turns it on: serving downloads models and spends their battery (docs/mesh.md, "Sharing").
    share_device = Boolean(default=False)
    share_download_mb = Integer(default=0)  # 0: serve only models already loaded
    share_max_jobs = Integer(default=1)


class WebSession(Table):
    """Server-side browser sessions, readable by any instance."""

    key = Varchar(length=64, unique=True)
    data = Bytea()
    expires_at = Timestamptz(null=True, default=None, index=True)
    # Whose session it is (also inside `data`): a request reads its session and user in one
    # statement, and deleting a user deletes their sessions.
    user = ForeignKey(User, null=True, default=None, on_delete=OnDelete.cascade)


class ThrottleHit(Table):
    """One attempt counted against a limit, kept for the limit's window: the throttles' shared store.

    `bucket` is a SHA-256 of what is limited (a username and address, say), so any input fits.
    """

    bucket = Varchar(length=64, index=True)
    at = Timestamptz(index=True)


class ApiToken(Table):
    """A Bearer token; only its SHA-256 is stored, the prefix helps users tell tokens apart."""

    user = ForeignKey(references=User, null=False, on_delete=OnDelete.cascade)
    name = Varchar(length=64)
    prefix = Varchar(length=16)
    token_hash = Varchar(length=64, unique=True)
    created_at = Timestamptz()
    last_used_at = Timestamptz(null=True, default=None)


class Room(Table):
    slug = Varchar(length=48, unique=True)
    name = Varchar(length=80)
    owner = ForeignKey(references=User, null=True, on_delete=OnDelete.set_null)
    is_private = Boolean(default=False)
    invite_code = Varchar(length=32, unique=True, null=True, default=None)
    created_at = Timestamptz()


class RoomMember(Table):
    """Who may enter a private room (its owner, and whoever used its invite code)."""

    room = ForeignKey(references=Room, null=False, on_delete=OnDelete.cascade, index=True)
    user = ForeignKey(references=User, null=False, on_delete=OnDelete.cascade, index=True)
    joined_at = Timestamptz()


class PeerSession(Table):
    """One browser (or other) peer in one room, from join_room until it leaves or vanishes."""

    peer_id = UUID(default=UUID4(), unique=True)
    room = ForeignKey(references=Room, null=False, on_delete=OnDelete.cascade)
    user = ForeignKey(references=User, null=False, on_delete=OnDelete.cascade)
    sid = Varchar(length=64, default="")
    backend = Varchar(length=16, default="")
    user_agent = Varchar(length=300, default="")
    state = Varchar(length=16, default="idle")
    pause_reason = Varchar(length=16, default="")  # why a `paused` peer serves nobody
    models_warm = JSON(default=[])
    queue = Integer(default=0)
    tok_s = Real(default=0.0)
    links = JSON(default=[])  # [{peer_id, rtt_ms}]: its open data channels, as it last reported them
    serving = JSON(default=[])  # [{model, requester}]: the jobs it runs now
    connected_at = Timestamptz()
    last_seen_at = Timestamptz()
    disconnected_at = Timestamptz(null=True, default=None)
    # 64-bit: credit adds up over a peer's lifetime, and Postgres' integer stops at 2**31 - 1.
    jobs_run = BigInt(default=0)
    tokens_generated = BigInt(default=0)
    # Tokens/s of its latest measured jobs (at most peers.service.SPARK_JOBS), oldest first: the peers
    # panel's sparkline, kept with the peer so the room page reads it with the peer, not from `job`.
    speeds = JSON(default=[])


class Job(Table):
    id = UUID(primary_key=True, default=UUID4())
    room = ForeignKey(references=Room, null=False, on_delete=OnDelete.cascade)
    requester = ForeignKey(references=User, null=False, on_delete=OnDelete.cascade)
    requester_peer = UUID(null=True, default=None)
    worker_peer = UUID(null=True, default=None)
    model_id = Varchar(length=200)
    task = Varchar(length=40, default="text-generation")
    mode = Varchar(length=8, default="local")
    prompt = Text()
    params = JSON(default={})
    status = Varchar(length=16, default="queued")
    output = Text(default="")
    error = Text(default="")
    attempts = Integer(default=0)
    workers = JSON(default=[])
    token_count = Integer(default=0)
    created_at = Timestamptz()
    started_at = Timestamptz(null=True, default=None)
    first_token_at = Timestamptz(null=True, default=None)
    finished_at = Timestamptz(null=True, default=None)
    updated_at = Timestamptz()
    # The run's own clock where its tokens arrived (the requester's page, or the server for API
    # jobs): first token to last, and the tokens after the first. tok/s comes from these alone.
    decode_ms = Real(null=True, default=None)
    decode_tokens = Integer(default=0)


class JobTrace(Table):
    """A job's timestamped events (docs/inference.md, "Traces"): msgspec JSON, capped in size, kept
    apart from Job so history pages never read it."""

    job = ForeignKey(references=Job, null=False, unique=True, on_delete=OnDelete.cascade)
    events = Bytea()


class Conversation(Table):
    """A chat in a room: an optional system prompt and its turns (docs/conversations.md)."""

    id = UUID(primary_key=True, default=UUID4())
    room = ForeignKey(references=Room, null=False, on_delete=OnDelete.cascade)
    owner = ForeignKey(references=User, null=False, on_delete=OnDelete.cascade)
    title = Varchar(length=120, default="")
    system_prompt = Text(default="")
    created_at = Timestamptz()
    updated_at = Timestamptz()


class Turn(Table):
    """One message of a conversation, in order; an assistant turn names the job that wrote it."""

    conversation = ForeignKey(references=Conversation, null=False, on_delete=OnDelete.cascade, index=True)
    position = Integer()
    role = Varchar(length=16)
    content = Text()
    job = ForeignKey(references=Job, null=True, default=None, on_delete=OnDelete.set_null, index=True)
    model_id = Varchar(length=200, default="")
    ran_on = Varchar(length=200, default="")  # where it ran, as the page said it: "this browser", …
    ttft_ms = Real(null=True, default=None)
    tok_s = Real(null=True, default=None)
    trimmed = Integer(default=0)  # earlier turns left out to fit the model's context
    created_at = Timestamptz()


ALL_TABLES: list[type[Table]] = [
    User, WebSession, ThrottleHit, ApiToken, Room, RoomMember, PeerSession, Job, JobTrace, Conversation, Turn,
]
