"""Job-control tools: how an agent records work items, artefacts and insights and
steers its job (goto a phase, wait for an event, escalate). The runner decides
nothing itself; it honours these calls.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from coro.domain.models import (
    ESCALATED,
    Artifact,
    Insight,
    Job,
    WorkItem,
    WorkItemStatus,
    iso_now,
    random_suffix,
    utcnow,
)
from coro.tools.registry import ToolContext, ToolError, ToolInput, ToolRegistry


class LogInput(ToolInput):
    message: str = Field(min_length=1, max_length=100_000)


class SetWorkItemsInput(ToolInput):
    work_items: list[str] = Field(max_length=500)


class UpdateWorkItemInput(ToolInput):
    name: str = Field(min_length=1)
    status: WorkItemStatus | None = None
    increment_loop: bool = False


class NoInput(ToolInput):
    pass


class SetJobParamsInput(ToolInput):
    params: dict[str, Any]


class GotoPhaseInput(ToolInput):
    phase: str = Field(min_length=1)


class AwaitEventInput(ToolInput):
    event_name: str = Field(min_length=1, max_length=500)
    pr_id: int | None = None


class ReasonInput(ToolInput):
    reason: str = Field(min_length=1, max_length=10_000)


class PostArtifactInput(ToolInput):
    kind: str = Field(min_length=1, max_length=100)
    title: str = Field(min_length=1, max_length=500)
    data: dict[str, Any] = Field(default_factory=dict)
    phase: str | None = None


class GetArtifactsInput(ToolInput):
    phase: str | None = None


class AddInsightInput(ToolInput):
    category: str = Field(min_length=1, max_length=100)
    summary: str = Field(min_length=1, max_length=2_000)
    detail: str = Field(min_length=1, max_length=20_000)
    suggestion: str | None = None
    suggested_layer: Literal["tenant", "repo"] | None = None


#: params an agent may not rewrite: they drive the runner itself.
_PROTECTED_PARAMS = frozenset({"script", "campaignParentId"})


def _stamp_id(prefix: str) -> str:
    return f"{prefix}-{int(utcnow().timestamp() * 1000)}-{random_suffix(6)}"


def _same_artifact(artifacts: list[Artifact], args: PostArtifactInput) -> Artifact | None:
    """The artefact a post repeats: the same kind, title and `data.path`. Without a path
    only an identical post is a repeat (two notes may share a title)."""
    path = args.data.get("path")
    for artifact in artifacts:
        if artifact.kind != args.kind or artifact.title != args.title:
            continue
        if path is not None and artifact.data.get("path") == path:
            return artifact
        if path is None and artifact.data == args.data:
            return artifact
    return None


def register(registry: ToolRegistry) -> None:
    @registry.tool("log", "Append a progress message to the job log the developer watches.")
    async def log(ctx: ToolContext, args: LogInput) -> Any:
        await ctx.log(args.message)
        return None

    @registry.tool(
        "set_work_items",
        "Set the job's work items to these names, in this order. New names start pending; "
        "a name already registered keeps its status and loop count (so a follow-up item "
        "can be added by listing the existing ones plus the new one).",
    )
    async def set_work_items(ctx: ToolContext, args: SetWorkItemsInput) -> Any:
        names = [n.strip() for n in args.work_items]
        if any(not n for n in names):
            raise ToolError("work item names must not be blank")
        if len(set(names)) != len(names):
            raise ToolError("work item names must be unique")

        def apply(job: Job) -> None:
            known = {item.name: item for item in job.work_items}
            job.work_items = [known.get(n) or WorkItem(name=n) for n in names]
            if job.current_work_item not in names:
                job.current_work_item = None
                job.work_item_loop_count = 0

        await ctx.store.update(ctx.job_id, apply)
        await ctx.log(f"[work-items] {len(names)} registered: {', '.join(names)}")
        return {"registered": len(names)}

    @registry.tool(
        "update_work_item",
        "Set a work item's status and/or count one more loop over it.",
    )
    async def update_work_item(ctx: ToolContext, args: UpdateWorkItemInput) -> Any:
        found: list[WorkItem] = []

        def apply(job: Job) -> bool:
            item = job.find_work_item(args.name)
            if item is None:
                return False
            if args.status is not None:
                item.status = args.status
                if args.status == "in-progress":
                    job.current_work_item = item.name
            if args.increment_loop:
                item.loop_count += 1
            job.work_item_loop_count = item.loop_count
            found[:] = [item]
            return True

        job, _ = await ctx.store.update(ctx.job_id, apply)
        if not found:
            known = ", ".join(w.name for w in job.work_items) or "none"
            raise ToolError(f"unknown work item {args.name!r} (known: {known})")
        item = found[0]
        await ctx.log(f"[work-item] {item.name}: {item.status} (loop {item.loop_count})")
        return {"updated": item.name, "status": item.status, "loopCount": item.loop_count}

    @registry.tool("get_work_items", "The job's work items and the current one.")
    async def get_work_items(ctx: ToolContext, args: NoInput) -> Any:
        job = await ctx.store.get(ctx.job_id)
        return {
            "workItems": [w.to_json() for w in job.work_items],
            "currentWorkItem": job.current_work_item,
        }

    @registry.tool("set_job_params", "Shallow-merge values into the job's params.")
    async def set_job_params(ctx: ToolContext, args: SetJobParamsInput) -> Any:
        refused = sorted(_PROTECTED_PARAMS & set(args.params))
        if refused:
            raise ToolError(f"these params cannot be changed by an agent: {', '.join(refused)}")

        def apply(job: Job) -> None:
            job.params.update(args.params)

        await ctx.store.update(ctx.job_id, apply)
        return {"updated": sorted(args.params)}

    @registry.tool(
        "goto_phase",
        "End this turn and continue with the named phase instead of the next one in order.",
    )
    async def goto_phase(ctx: ToolContext, args: GotoPhaseInput) -> Any:
        if ctx.phase_names and args.phase not in ctx.phase_names:
            raise ToolError(
                f"unknown phase {args.phase!r}; declared phases: {', '.join(ctx.phase_names)}"
            )
        ctx.signals.next_phase = args.phase
        return {"goingToPhase": args.phase}

    @registry.tool(
        "await_event",
        "Park the job until an event arrives. Use 'developer-input: <question>' to ask the "
        "developer; PR labels such as 'pr:approved' wait on a pull request (give prId).",
    )
    async def await_event(ctx: ToolContext, args: AwaitEventInput) -> Any:
        ctx.signals.awaiting_event = args.event_name.strip()
        ctx.signals.awaiting_pr_id = args.pr_id
        return {"awaiting": ctx.signals.awaiting_event, "prId": args.pr_id}

    @registry.tool(
        "escalate",
        "Stop and hand the job to the developer with a reason (they can reply to resume).",
    )
    async def escalate(ctx: ToolContext, args: ReasonInput) -> Any:
        def apply(job: Job) -> None:
            job.status = ESCALATED
            job.escalation_message = args.reason

        await ctx.store.update(ctx.job_id, apply, note=f"[escalated] {args.reason}")
        ctx.signals.escalated = True
        ctx.signals.escalation_reason = args.reason
        return {"escalated": True, "reason": args.reason}

    @registry.tool(
        "request_new_session",
        "Start the next phase with a fresh conversation (drops the transcript).",
    )
    async def request_new_session(ctx: ToolContext, args: ReasonInput) -> Any:
        def apply(job: Job) -> None:
            job.session_id = None

        await ctx.store.update(ctx.job_id, apply)
        await ctx.store.backend.clear_transcript(ctx.job_id)
        ctx.signals.new_session = True  # so the rest of this turn is not written back
        await ctx.log(f"[session-reset] {args.reason}")
        return {"newSession": True, "reason": args.reason}

    @registry.tool(
        "post_artifact",
        "Publish an artefact for the developer (data.path = a file relative to the job "
        "directory, data.url = a link). Posting one with the same kind, title and data.path "
        "again updates that artefact instead of adding a copy.",
    )
    async def post_artifact(ctx: ToolContext, args: PostArtifactInput) -> Any:
        path = args.data.get("path")
        if path is not None and not isinstance(path, str):
            raise ToolError("data.path must be a string")
        posted: list[tuple[Artifact, bool]] = []

        def apply(job: Job) -> None:
            phase = args.phase or ctx.phase
            existing = _same_artifact(job.artifacts, args)
            if existing is not None:
                # A repeated post (an agent retrying, or looping) revises the one the
                # developer already sees rather than piling up identical copies.
                existing.data = args.data
                existing.updated_at = iso_now()
                posted[:] = [(existing, True)]
                return
            by = f"{ctx.phase}:{job.current_work_item}" if job.current_work_item else ctx.phase
            artifact = Artifact(
                id=_stamp_id("art"),
                phase=phase,
                kind=args.kind,
                title=args.title,
                data=args.data,
                created_by=by,
                created_at=iso_now(),
            )
            job.artifacts.append(artifact)
            posted[:] = [(artifact, False)]

        await ctx.store.update(ctx.job_id, apply)
        art, updated = posted[0]
        answer = {"id": art.id, "phase": art.phase, "kind": art.kind, "title": art.title}
        if updated:
            await ctx.log(f"[artifact] updated {art.phase}/{art.kind}: {art.title}")
            return {**answer, "updated": f"updated artefact {art.id} (same kind, title and path)"}
        await ctx.log(f"[artifact] {art.phase}/{art.kind}: {art.title}")
        return answer

    @registry.tool("get_artifacts", "Artefacts of this job, optionally of one phase.")
    async def get_artifacts(ctx: ToolContext, args: GetArtifactsInput) -> Any:
        job = await ctx.store.get(ctx.job_id)
        found = [a.to_json() for a in job.artifacts if args.phase in (None, a.phase)]
        return {"artifacts": found, "total": len(found)}

    @registry.tool(
        "add_insight",
        "Record something later agents (or the developer) should know: a convention, a "
        "pitfall, a missing instruction.",
    )
    async def add_insight(ctx: ToolContext, args: AddInsightInput) -> Any:
        recorded: list[tuple[str, int]] = []

        def apply(job: Job) -> None:
            insight = Insight(
                id=_stamp_id("ins"),
                phase=ctx.phase,
                category=args.category,
                summary=args.summary,
                detail=args.detail,
                suggestion=args.suggestion,
                suggested_layer=args.suggested_layer,
                created_at=iso_now(),
            )
            job.insights.append(insight)
            recorded[:] = [(insight.id, len(job.insights))]

        await ctx.store.update(ctx.job_id, apply)
        insight_id, total = recorded[0]
        await ctx.log(f"[insight] {args.category}: {args.summary}")
        return {"recorded": True, "insightId": insight_id, "totalInsights": total}
