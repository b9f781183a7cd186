"""Campaign tools (SPEC §4.5) and lane switches (`switch_workflow`,
`convert_to_campaign`).

Defining a campaign (`campaign_register_child`, `campaign_finalize`,
`campaign_status`) and switching lanes only need the job's state and the intelligence
layers. The child controls (`campaign_skip_child`, `campaign_rerun_child`,
`campaign_cancel_child`) go through the runner's coordinator, which then sweeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

from pydantic import Field, ValidationError

from coro.domain.models import CampaignChild, CampaignTrackerRef
from coro.domain.workflows import WorkflowError
from coro.engine.campaigns import planning, reports, switching
from coro.engine.campaigns.model import DEFAULT_CHILD_WORKFLOW, MAX_CHILDREN
from coro.engine.service import Conflict, InvalidRequest
from coro.intelligence.layers import IntelligenceLayers, WorkflowNotFound
from coro.state.backend import JobNotFound
from coro.tools.registry import CampaignControl, ToolContext, ToolError, ToolInput, ToolRegistry


class RegisterChildInput(ToolInput):
    name: str = Field(min_length=1, max_length=64, description="1-64 of [a-zA-Z0-9._-]")
    description: str = Field(min_length=1, max_length=50_000)
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="The child job's params; params.workflowPath picks its workflow "
        f"(default {DEFAULT_CHILD_WORKFLOW}).",
    )
    depends_on: list[str] = Field(default_factory=list, max_length=MAX_CHILDREN)
    tracker_ref: dict[str, Any] | None = Field(
        default=None, description="The child's ticket: {provider (jira|github|linear), key, url?}"
    )


class NoInput(ToolInput):
    pass


class ChildControlInput(ToolInput):
    name: str = Field(min_length=1, max_length=64)
    reason: str | None = Field(default=None, max_length=10_000)


class SwitchWorkflowInput(ToolInput):
    workflow_path: str = Field(min_length=1, max_length=500)
    reason: str = Field(min_length=1, max_length=10_000)
    params_patch: dict[str, Any] = Field(default_factory=dict)
    to_phase: str | None = Field(default=None, min_length=1, max_length=64)


class ConvertToCampaignInput(ToolInput):
    title: str = Field(min_length=1, max_length=500)
    description: str = Field(min_length=1, max_length=50_000)
    tracker_epic_ref: str | None = Field(default=None, max_length=200)


@contextmanager
def _as_tool_errors() -> Iterator[None]:
    """The engine's refusals become the agent's error results."""
    try:
        yield
    except (InvalidRequest, Conflict, JobNotFound) as exc:
        raise ToolError(str(exc)) from exc


def _coordinator(ctx: ToolContext) -> CampaignControl:
    if ctx.campaigns is None:
        raise ToolError(
            "campaign child controls need the runner's coordinator; call this tool from a "
            "phase run by the runner (or its /mcp endpoint)"
        )
    return ctx.campaigns


def _lanes(ctx: ToolContext) -> IntelligenceLayers:
    if ctx.layers is None:
        raise ToolError("workflow switches need the runner's intelligence layers")
    return ctx.layers


ChildAction = Literal["skip", "rerun", "cancel"]
#: The child controls agents may use, by action (the developer has all six).
CHILD_CONTROL_TOOLS: dict[ChildAction, str] = {
    "skip": "Skip a child that has not finished (its dependants proceed); a failed or "
    "escalated child is abandoned (cancelled) instead.",
    "rerun": "Reset a finished child to pending: a new child job is created when its "
    "dependencies allow (the campaign must be back in its coordinating phase).",
    "cancel": "Cancel a child that has not finished, and its job if it is still going; its "
    "dependants proceed.",
}


def _child_control(action: ChildAction) -> Callable[[ToolContext, ChildControlInput], Any]:
    async def control(ctx: ToolContext, args: ChildControlInput) -> Any:
        with _as_tool_errors():
            child = await getattr(_coordinator(ctx), action)(ctx.job_id, args.name, args.reason)
        return {"ok": True, "action": action, "child": reports.child_view(child)}

    return control


def register(registry: ToolRegistry) -> None:
    @registry.tool(
        "campaign_register_child",
        "Add a child to this campaign: a job of its own with a description, its params "
        "(params.workflowPath picks its workflow) and the children it depends on. Call "
        "campaign_finalize once every child is registered.",
    )
    async def campaign_register_child(ctx: ToolContext, args: RegisterChildInput) -> Any:
        workflow = args.params.get("workflowPath")
        if workflow is not None:
            if not isinstance(workflow, str) or not workflow.strip():
                raise ToolError("params.workflowPath must be a workflow path string")
            if ctx.layers is not None:
                try:
                    target = await asyncio.to_thread(ctx.layers.load_workflow, workflow)
                except (WorkflowError, WorkflowNotFound, ValueError) as exc:
                    raise ToolError(f"params.workflowPath cannot be used: {exc}") from exc
                if target.kind == "campaign":
                    raise ToolError("a campaign child cannot itself be a campaign")
        tracker = None
        if args.tracker_ref is not None:
            try:
                tracker = CampaignTrackerRef.model_validate(args.tracker_ref)
            except ValidationError as exc:
                raise ToolError("trackerRef must be {provider, key, url?} strings") from exc
        spec = CampaignChild(
            name=args.name.strip(),
            description=args.description.strip(),
            params=args.params,
            depends_on=[d.strip() for d in args.depends_on],
            tracker_ref=tracker,
        )
        with _as_tool_errors():
            total = await planning.register_child(ctx.store, ctx.job_id, spec)
        return {"ok": True, "name": spec.name, "total": total}

    @registry.tool(
        "campaign_finalize",
        "Check the registered children (dependencies exist, no cycle, at least one can "
        "start), then end this turn and move the campaign to its coordinating phase, where "
        "the runner dispatches the children.",
    )
    async def campaign_finalize(ctx: ToolContext, args: NoInput) -> Any:
        with _as_tool_errors():
            outcome = await planning.finalize(ctx.store, ctx.job_id)
        target = outcome["coordinating"]
        if ctx.phase_names and target not in ctx.phase_names:
            raise ToolError(f"phase {target!r} is not declared by this workflow")
        ctx.signals.next_phase = target
        return {
            "ok": True,
            "childCount": outcome["childCount"],
            "readyCount": outcome["readyCount"],
        }

    @registry.tool(
        "campaign_status",
        "This campaign's children: counts by status, each child with its job's status and "
        "pull requests, and the insights gathered from finished children.",
    )
    async def campaign_status(ctx: ToolContext, args: NoInput) -> Any:
        with _as_tool_errors():
            return await reports.status_report(ctx.store, ctx.job_id)

    for action, description in CHILD_CONTROL_TOOLS.items():
        registry.tool(f"campaign_{action}_child", description)(_child_control(action))

    @registry.tool(
        "switch_workflow",
        "Move this job to another workflow (lane) in place, keeping its state: ends this "
        "turn and continues in toPhase (default: the new workflow's initial phase).",
    )
    async def switch_workflow(ctx: ToolContext, args: SwitchWorkflowInput) -> Any:
        with _as_tool_errors():
            result = await switching.switch_workflow(
                ctx.store,
                _lanes(ctx),
                ctx.job_id,
                args.workflow_path,
                args.reason,
                params_patch=args.params_patch,
                to_phase=args.to_phase,
            )
        if result.get("switched"):
            ctx.signals.next_phase = result["toPhase"]
            ctx.signals.new_session = True
        return result

    @registry.tool(
        "convert_to_campaign",
        "Turn this job into a campaign (the campaign workflow) when the request is too big "
        "for one job: ends this turn; the campaign's phases then split it into children.",
    )
    async def convert_to_campaign(ctx: ToolContext, args: ConvertToCampaignInput) -> Any:
        with _as_tool_errors():
            result = await switching.convert_to_campaign(
                ctx.store,
                _lanes(ctx),
                ctx.job_id,
                args.title,
                args.description,
                args.tracker_epic_ref,
            )
        ctx.signals.next_phase = result["toPhase"]
        ctx.signals.new_session = True
        return result
