"""What is shown of a campaign: to its agents (`status_report`, the `campaign_status`
tool) and through the API (a job's snapshot with its children's summaries and the
campaign's totals, a campaign's children, the list of campaigns)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from coro.domain.models import CampaignChild, Job
from coro.engine.campaigns.model import (
    DEFAULT_CHILD_WORKFLOW,
    TERMINAL_CHILD,
    count_by_status,
    is_campaign,
)
from coro.engine.service import Conflict
from coro.state.backend import JobQuery
from coro.state.store import JobStore

#: child jobs read per campaign snapshot (reruns included)
MAX_CHILD_JOBS = 2000
#: jobs scanned by `list_campaigns`, newest first
MAX_SCANNED_JOBS = 10_000


def child_view(child: CampaignChild) -> dict[str, Any]:
    """A child without its params (`campaign_status`, listings)."""
    return child.to_json(exclude={"params"}, exclude_none=True)


async def status_report(store: JobStore, job_id: str) -> dict[str, Any]:
    """`campaign_status`: counts by status, every child with its job's state, and the
    insights gathered from finished children."""
    job = await store.get(job_id)
    if not is_campaign(job):
        raise Conflict("this job is not a campaign")
    children = job.campaign_children or []
    views = []
    for child in children:
        view = child_view(child)
        workflow = child.params.get("workflowPath")
        view["workflowPath"] = workflow if isinstance(workflow, str) else DEFAULT_CHILD_WORKFLOW
        child_job = await store.find(child.job_id) if child.job_id else None
        if child_job is not None:
            view["job"] = {
                "status": child_job.status,
                "phase": child_job.phase,
                "escalationMessage": child_job.escalation_message,
                "pullRequests": [
                    {
                        "prId": p.pr_id,
                        "repoSlug": p.repo_slug,
                        "url": p.url,
                        "workItem": p.work_item,
                        "state": _pr_state(p.merged_at, p.declined_at),
                    }
                    for p in child_job.pr_mappings
                ],
            }
        views.append(view)
    return {
        "campaignJobId": job.id,
        "totalChildren": len(children),
        "byStatus": count_by_status(children),
        "children": views,
        "allTerminal": bool(children) and all(c.status in TERMINAL_CHILD for c in children),
        "aggregatedInsights": [
            {
                "sourceChildName": i.source_child_name,
                "category": i.category,
                "summary": i.summary,
                "detail": i.detail,
            }
            for i in job.campaign_aggregated_insights
            if i.status != "rejected"
        ],
    }


async def _child_jobs(store: JobStore, parent_id: str) -> dict[str, Job]:
    """Every job created for the campaign's children (reruns included), by id."""
    jobs, _ = await store.backend.list_jobs(
        JobQuery(campaign_parent_id=parent_id, limit=MAX_CHILD_JOBS)
    )
    return {j.id: j for j in jobs}


async def snapshot(store: JobStore, job: Job) -> dict[str, Any]:
    """The job's JSON; a campaign's children carry a `summary` of their job, and
    `campaignTotals` adds up the campaign and every child job it created."""
    data = job.to_json()
    if job.campaign_children is None:
        return data
    by_id = await _child_jobs(store, job.id)
    for child, entry in zip(job.campaign_children, data["campaignChildren"], strict=True):
        child_job = by_id.get(child.job_id) if child.job_id else None
        if child.job_id and child_job is None:
            child_job = await store.find(child.job_id)
        entry["summary"] = _summary(child_job) if child_job is not None else None
    data["campaignTotals"] = _totals(job, by_id.values())
    return data


async def children(store: JobStore, parent_id: str, max_parallel: int) -> dict[str, Any]:
    """`GET /jobs/{id}/children`: the children with their jobs' summaries, counts by
    status and the campaign's totals."""
    job = await store.get(parent_id)
    if not is_campaign(job):
        raise Conflict(f"Job {parent_id} is not a campaign")
    snap = await snapshot(store, job)
    children = job.campaign_children or []
    return {
        "campaignJobId": job.id,
        "status": job.status,
        "phase": job.phase,
        "maxParallelChildren": max_parallel,
        "byStatus": count_by_status(children),
        "allTerminal": bool(children) and all(c.status in TERMINAL_CHILD for c in children),
        "children": snap.get("campaignChildren") or [],
        "totals": snap.get("campaignTotals") or _totals(job, []),
    }


async def list_campaigns(store: JobStore, limit: int = 50) -> list[dict[str, Any]]:
    """Campaign jobs, newest first, with their child counts."""
    found: list[dict[str, Any]] = []
    offset, page = 0, 200
    while len(found) < limit and offset < MAX_SCANNED_JOBS:
        jobs, total = await store.backend.list_jobs(JobQuery(limit=page, offset=offset))
        for job in jobs:
            if is_campaign(job) and len(found) < limit:
                children = job.campaign_children or []
                found.append(
                    {
                        "jobId": job.id,
                        "status": job.status,
                        "phase": job.phase,
                        "workflowPath": job.workflow_path,
                        "title": job.params.get("campaignTitle") or job.params.get("description"),
                        "totalChildren": len(children),
                        "byStatus": count_by_status(children),
                        "escalationMessage": job.escalation_message,
                        "createdAt": job.created_at,
                        "updatedAt": job.updated_at,
                    }
                )
        offset += page
        if offset >= total:
            break
    return found


def _pr_state(merged_at: str | None, declined_at: str | None) -> str:
    if merged_at:
        return "merged"
    return "declined" if declined_at else "open"


def _summary(job: Job) -> dict[str, Any]:
    return {
        "jobId": job.id,
        "type": job.type,
        "status": job.status,
        "phase": job.phase,
        "workflowPath": job.workflow_path,
        "tokenUsage": job.token_usage.to_json(),
        "prMappings": [p.to_json(exclude={"seen"}) for p in job.pr_mappings],
        "createdAt": job.created_at,
        "updatedAt": job.updated_at,
        "awaitingEvent": job.awaiting_event,
        "escalationMessage": job.escalation_message,
        "rateLimitInfo": job.rate_limit_info.to_json() if job.rate_limit_info else None,
    }


def _totals(parent: Job, child_jobs: Iterable[Job]) -> dict[str, Any]:
    """Tokens, cost and pull requests of the campaign job plus every child job."""
    jobs = [parent, *child_jobs]
    usage = [j.token_usage for j in jobs]
    prs = [p for j in jobs for p in j.pr_mappings]
    return {
        "childJobCount": len(jobs) - 1,
        "inputTokens": sum(u.input_tokens for u in usage),
        "outputTokens": sum(u.output_tokens for u in usage),
        "cacheReadInputTokens": sum(u.cache_read_input_tokens for u in usage),
        "cacheCreationInputTokens": sum(u.cache_creation_input_tokens for u in usage),
        "totalCostUsd": round(sum(u.total_cost_usd for u in usage), 6),
        "prCount": len(prs),
        "mergedPrCount": sum(p.merged_at is not None for p in prs),
    }
