"""Job history pages (list with filters and "load more", detail) and the jobs API."""

from __future__ import annotations

from typing import Annotated, ClassVar, get_args
from uuid import UUID

from litestar import Controller, get, patch, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.plugins.htmx import HTMXRequest, HTMXTemplate
from litestar.response import Template
from litestar.types import Dependencies

from mesh_nanollm.conversations.service import conversation_of_job
from mesh_nanollm.errors import InvalidInput, NotFound
from mesh_nanollm.jobs import service, timeline
from mesh_nanollm.jobs.schemas import JobCreate, JobPage, JobPatch, JobView, Status
from mesh_nanollm.jobs.trace import Trace
from mesh_nanollm.openapi import BEARER, errors
from mesh_nanollm.peers import service as peers
from mesh_nanollm.rooms.service import list_visible_rooms
from mesh_nanollm.security import provide_user
from mesh_nanollm.tables import User

STATUSES = get_args(Status)
StatusQuery = Annotated[str | None, QueryParameter(max_length=16)]
RoomQuery = Annotated[str | None, QueryParameter(max_length=48)]
ModelQuery = Annotated[str | None, QueryParameter(max_length=200)]
CursorQuery = Annotated[str | None, QueryParameter(max_length=200)]
LimitQuery = Annotated[int, QueryParameter(ge=1, le=service.PAGE_MAX)]


def job_filter(status: str | None, room: str | None, model: str | None) -> service.JobFilter:
    if status and status not in STATUSES:
        raise InvalidInput(f"Unknown status “{status}”. Use one of: {', '.join(STATUSES)}.")
    return service.JobFilter(status=status or None, room=room or None, model=model or None)


class JobPages(Controller):
    path = "/jobs"
    include_in_schema = False  # HTML for browsers; /schema documents the JSON API
    dependencies: ClassVar[Dependencies] = {"user": Provide(provide_user)}

    @get("/", name="jobs")
    async def history(
        self,
        request: HTMXRequest,
        user: NamedDependency[User],
        status: StatusQuery = None,
        room: RoomQuery = None,
        model: ModelQuery = None,
        cursor: CursorQuery = None,
    ) -> Template:
        filters = job_filter(status, room, model)
        jobs, next_cursor = await service.list_jobs(user, filters, cursor)
        context = {"user": user, "jobs": jobs, "next_cursor": next_cursor, "filters": filters}
        if request.htmx and cursor:
            return HTMXTemplate(template_name="_job_rows.html", context=context)
        if request.htmx:
            return HTMXTemplate(template_name="_job_table.html", context=context, push_url=str(request.url))
        context["rooms"] = await list_visible_rooms(user)
        context["models"] = await service.list_models_used(user)
        context["statuses"] = STATUSES
        return Template("jobs.html", context=context)

    @get("/{job_id:uuid}", name="job")
    async def detail(self, user: NamedDependency[User], job_id: FromPath[UUID]) -> Template:
        job = await service.get_job(user, job_id)
        workers = await service.describe_workers(job)
        trace = await service.get_trace(job_id)
        drawing = None
        if trace is not None:
            names = await peers.peer_names({event.peer for event in trace.events if event.peer})
            drawing = timeline.lay_out(trace, names, "your browser")
        conversation = await conversation_of_job(user, job_id)
        context = {"user": user, "job": job, "workers": workers, "timeline": drawing, "conversation": conversation}
        return Template("job.html", context=context)


class JobApi(Controller):
    path = "/api/jobs"
    tags: ClassVar[list[str]] = ["jobs"]
    security = BEARER
    dependencies: ClassVar[Dependencies] = {"user": Provide(provide_user)}

    @get("/", summary="List jobs", responses=errors(400, 401, 422))
    async def list_jobs(
        self,
        user: NamedDependency[User],
        status: StatusQuery = None,
        room: RoomQuery = None,
        model: ModelQuery = None,
        cursor: CursorQuery = None,
        limit: LimitQuery = service.PAGE_SIZE,
    ) -> JobPage:
        """The caller's jobs, newest first; pass `next_cursor` back as `cursor` for the next page."""
        jobs, next_cursor = await service.list_jobs(user, job_filter(status, room, model), cursor, limit)
        return JobPage(jobs=jobs, next_cursor=next_cursor)

    @post("/", summary="Record a job", responses=errors(400, 401, 403, 404, 409, 413, 422))
    async def create_job(self, user: NamedDependency[User], data: JSONBody[JobCreate]) -> JobView:
        """Record a new job (status `queued`) in a room the caller may enter. With an `id` of the
        caller's choosing (a random UUID), a create sent again answers with the job it made."""
        return await service.create_job(user, data)

    @get("/{job_id:uuid}", summary="Get a job", responses=errors(400, 401, 404))
    async def get_job(self, user: NamedDependency[User], job_id: FromPath[UUID]) -> JobView:
        """One of the caller's jobs, with its output, timings and the peers that worked on it."""
        return await service.get_job(user, job_id)

    @get("/{job_id:uuid}/trace", summary="Get a job's trace", responses=errors(400, 401, 404))
    async def get_trace(self, user: NamedDependency[User], job_id: FromPath[UUID]) -> Trace:
        """The job's timestamped events and tokens over time, as whoever witnessed the run recorded them."""
        await service.get_job(user, job_id)
        trace = await service.get_trace(job_id)
        if trace is None:
            raise NotFound("This job has no trace: it was recorded without one, or has not finished yet.")
        return trace

    @patch("/{job_id:uuid}", summary="Update a job", responses=errors(400, 401, 403, 404, 409, 413, 422))
    async def update_job(self, user: NamedDependency[User], job_id: FromPath[UUID], data: JSONBody[JobPatch]) -> JobView:
        """Move a job along queued → running → succeeded | failed | cancelled (409 otherwise)."""
        return await service.update_job(user, job_id, data)
