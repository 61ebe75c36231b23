"""Listing a tenant's jobs (``GET /v1/summaries`` → ``GET /internal/jobs``): newest first, keyset
pagination on ``(created_at, id)`` with an opaque cursor.

Keyset, not offset: a page starts strictly after the last ``(created_at, id)`` of the previous
one, so jobs created while a client pages through (they are newer than every job already
listed) never shift the older pages: no job that existed when the first page was read is skipped
or listed twice. The index ``ix_jobs_tenant_created`` (``ix_jobs_tenant_status_created`` with a
status filter; migration 0003) serves the query.

The cursor is base64url of a small JSON document (version, created_at, id), validated strictly:
anything that does not decode to exactly that is a 422 problem. It is not signed: it only
positions the scan inside the caller's own jobs (the tenant comes from the API key, never from
the cursor), so a forged one can show nothing a request without a cursor could not.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import UTC, datetime

from sqlalchemy import Select, and_, or_, select

from async_svc.jobs import to_view
from common.problems import Problem
from common.schemas import DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT, JobList, JobStatus
from common.store import Database, Job, Notification

CURSOR_VERSION = 1
MAX_CURSOR_CHARS = 512


def bad_cursor(why: str) -> Problem:
    return Problem(
        422,
        "invalid-cursor",
        "Invalid cursor",
        f"cursor: {why}; pass back the next_cursor of a previous page unchanged, or omit it for the first page",
    )


def encode_cursor(created_at: datetime, job_id: str) -> str:
    doc = {"v": CURSOR_VERSION, "c": created_at.astimezone(UTC).isoformat(), "i": job_id}
    raw = json.dumps(doc, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    if len(cursor) > MAX_CURSOR_CHARS:
        raise bad_cursor(f"is {len(cursor)} characters; the limit is {MAX_CURSOR_CHARS}")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        doc = json.loads(raw)
    except (binascii.Error, ValueError):
        raise bad_cursor("not a cursor this API issued") from None
    if not isinstance(doc, dict) or set(doc) != {"v", "c", "i"} or doc["v"] != CURSOR_VERSION:
        raise bad_cursor("not a cursor this API issued")
    try:
        created_at = datetime.fromisoformat(doc["c"])
        job_id = str(uuid.UUID(doc["i"]))
    except (TypeError, ValueError, AttributeError):
        raise bad_cursor("not a cursor this API issued") from None
    if created_at.tzinfo is None or job_id != doc["i"]:
        raise bad_cursor("not a cursor this API issued")
    return created_at, job_id


def page_query(
    tenant: str, *, status: JobStatus | None, created_after: datetime | None, limit: int, cursor: str | None
) -> Select[Job]:
    """The page's SELECT (``limit`` + 1 rows: one more says whether there is a next page)."""
    q = select(Job).where(Job.tenant == tenant)
    if status is not None:
        q = q.where(Job.status == status)
    if created_after is not None:
        if created_after.tzinfo is None:
            created_after = created_after.replace(tzinfo=UTC)
        q = q.where(Job.created_at > created_after)
    if cursor:
        c_at, c_id = decode_cursor(cursor)
        # (created_at, id) < (c_at, c_id), spelled out (row values bind without the column types);
        # the redundant created_at <= c_at is the index's range condition.
        q = q.where(Job.created_at <= c_at, or_(Job.created_at < c_at, and_(Job.created_at == c_at, Job.id < c_id)))
    return q.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)


async def list_jobs(
    db: Database,
    tenant: str,
    *,
    status: JobStatus | None = None,
    created_after: datetime | None = None,
    limit: int = DEFAULT_LIST_LIMIT,
    cursor: str | None = None,
) -> JobList:
    """One page of ``tenant``'s jobs, newest first; ``next_cursor`` is None on the last page."""
    if not 1 <= limit <= MAX_LIST_LIMIT:  # the routers check it too; this is the store's own bound
        raise Problem(422, "validation-error", "Request body is not valid", f"limit: 1 to {MAX_LIST_LIMIT}")
    q = page_query(tenant, status=status, created_after=created_after, limit=limit, cursor=cursor)
    async with db.session() as s:
        jobs = list((await s.execute(q)).scalars())
        more = len(jobs) > limit
        jobs = jobs[:limit]
        notes: dict[str, list[Notification]] = {}
        if jobs:
            rows = await s.execute(select(Notification).where(Notification.job_id.in_([j.id for j in jobs])))
            for n in rows.scalars():
                notes.setdefault(n.job_id, []).append(n)
    items = [to_view(j, notes.get(j.id)) for j in jobs]
    next_cursor = encode_cursor(jobs[-1].created_at, jobs[-1].id) if more else None
    return JobList(items=items, next_cursor=next_cursor)
