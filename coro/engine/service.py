"""Job operations offered to the outside (HTTP API, CLI, cloud): create, read, control.

Errors are engine exceptions (`InvalidRequest`, `Conflict`, `PluginRequired`,
`JobNotFound`); the web layer maps them to status codes. State is always written before
a running loop is told, so every control is safe against the loop's own writes.
"""

from __future__ import annotations

import asyncio
import mimetypes
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coro.domain.errors import PluginError, PluginNotFoundError
from coro.domain.models import (
    AWAITING_DEVELOPER_INPUT,
    CANCELLED,
    CHECKPOINT_LABEL_PREFIX,
    COMPLETE,
    PARKING,
    PAUSE_LABEL,
    QUEUED,
    Budget,
    ExternalRef,
    Job,
    JobOrigin,
    PhaseModelOverride,
    TriggerSource,
    is_running,
    is_stopped,
    is_terminal,
    iso_now,
    random_suffix,
    utcnow,
)
from coro.domain.workflows import WorkflowError
from coro.engine import prompts
from coro.engine.dispatcher import Dispatcher
from coro.engine.env import EngineEnv, NoExecutor, select_model
from coro.executors import ValidatesParams
from coro.intelligence.layers import WorkflowNotFound
from coro.plugins.registry import PluginResolutionError
from coro.plugins.trackers.base import TrackerPlugin
from coro.state.backend import JobExists, JobNotFound, JobQuery
from coro.system.git import (
    MAX_DIFF_RESPONSE_BYTES,
    GitError,
    GitWorkspace,
    find_checkout,
)

EDITABLE_ARTIFACT_SUFFIXES = frozenset({".md", ".txt", ".yml", ".yaml", ".json"})
MAX_ARTIFACT_EDIT_BYTES = 2 * 1024 * 1024
_CONTENT_TYPES = {
    ".md": "text/markdown",
    ".json": "application/json",
    ".txt": "text/plain",
    ".html": "text/html",
    ".yml": "text/yaml",
    ".yaml": "text/yaml",
    ".log": "text/plain",
}


class InvalidRequest(ValueError):
    """The request is malformed or names something that does not exist (HTTP 400)."""


class Conflict(RuntimeError):
    """The job's state does not allow this now (HTTP 409)."""


class PluginRequired(RuntimeError):
    def __init__(self, missing_kind: str, message: str) -> None:
        super().__init__(message)
        self.missing_kind = missing_kind


def _no_executor_help(
    reason: str, phase: str, tier: str | None, model: str | None, env: EngineEnv
) -> str:
    """Why a phase cannot run and how to configure its executor: a fresh runner has no
    LLM provider at all, which says more than "no executor"."""
    if " has no executor:" not in reason:  # a provider is named but not installed
        return f"{reason}; configure it under plugins.installed, or run `coro init`"
    looked = "a provider on the phase"
    if model:
        looked += f", the alias {model!r}"
    elif tier:
        looked += f", the alias 'tier:{tier}'"
    return (
        f"phase {phase!r} has no executor: no LLM provider is configured (the phase looks "
        f"for {looked}, then llm.defaultProvider; none is set). Run `coro init` to choose "
        "one — anthropic, openai, a local OpenAI-compatible server, or the offline "
        "`script` executor — or set llm.defaultProvider in config.json (installed "
        f"executors: {', '.join(env.executors.ids())})"
    )


class PayloadTooLarge(ValueError):
    pass


class UpstreamFailed(RuntimeError):
    """A plugin's provider (a tracker, a forge) failed the request (HTTP 502)."""


class UnsupportedType(ValueError):
    pass


@dataclass
class NewJob:
    workflow_path: str
    type: str = "job"
    params: dict[str, Any] = field(default_factory=dict)
    repo: str | None = None
    service_name: str | None = None
    description: str | None = None
    reviewers: list[str] | None = None
    git_provider: str | None = None
    jira_ticket_id: str | None = None
    interactive: bool | None = None
    trigger_source: TriggerSource | None = None
    budget: Budget | None = None
    #: the id to create the job under (a job the cloud dispatched keeps the cloud's id);
    #: a job of that id already there is the answer (creating it again changes nothing)
    job_id: str | None = None
    #: the thread a job started by a trigger came from (`coro.engine.triggers`)
    origin: JobOrigin | None = None


#: ids given from outside name a directory of `work/`: plain names, never `.` or `..`
_GIVEN_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


def job_id_label(label: str) -> str:
    """`label` as the start of a job id: letters, digits, `.`, `_`, `-`; at most 40."""
    clean = re.sub(r"[^a-zA-Z0-9._-]", "-", re.sub(r"\s+", "-", label.strip()))
    return re.sub(r"-{2,}", "-", clean).strip("-")[:40]


def new_job_id(label: str, job_type: str) -> str:
    """`<label>-<type>-<epochMs>-<4 random>`; without a label `<type>-<epochMs>-<4 random>`
    (not `job-job-…`)."""
    clean = job_id_label(label)
    stamp = int(utcnow().timestamp() * 1000)
    prefix = f"{clean}-" if clean else ""
    return f"{prefix}{job_type}-{stamp}-{random_suffix(4)}"


class JobService:
    def __init__(self, env: EngineEnv, dispatcher: Dispatcher) -> None:
        self.env = env
        self.store = env.store
        self.dispatcher = dispatcher
        #: called after a job is cancelled (a campaign then cancels its children)
        self.on_cancelled: list[Callable[[Job, str | None], Awaitable[None]]] = []

    # --- create & read ----------------------------------------------------------------

    async def create(self, request: NewJob) -> Job:
        job, _ = await self.create_new(request)
        return job

    async def create_new(self, request: NewJob) -> tuple[Job, bool]:
        """The job `request` asks for, and whether this call created it (False: a job of
        `request.job_id` was already there, or was made meanwhile by another caller)."""
        if request.job_id is not None:
            if not _GIVEN_JOB_ID.match(request.job_id):
                raise InvalidRequest(
                    "jobId: 1-200 letters, digits, '.', '_' or '-', starting with a letter or digit"
                )
            existing = await self.store.find(request.job_id)
            if existing is not None:
                return existing, False
        await self.env.layers.refresh()  # a tenant remote's first clone, if still going
        try:
            workflow = await asyncio.to_thread(self.env.layers.load_workflow, request.workflow_path)
        except ValueError as exc:  # bad path (WorkflowError is not a ValueError)
            raise InvalidRequest(f"workflowPath: {exc}") from exc
        except WorkflowNotFound as exc:
            raise InvalidRequest(str(exc)) from exc
        except WorkflowError as exc:
            raise InvalidRequest(f"Workflow is invalid: {exc}") from exc
        params = dict(request.params)
        for key, value in (
            ("repo", request.repo),
            ("serviceName", request.service_name),
            ("description", request.description),
            ("reviewers", request.reviewers),
            ("gitProvider", request.git_provider),
            ("jiraTicketId", request.jira_ticket_id),
        ):
            if value is not None:
                params[key] = value
        if request.repo:
            params.setdefault("repoSlug", request.repo.rstrip("/").split("/")[-1])
        trigger: TriggerSource = request.trigger_source or (
            "jira" if request.jira_ticket_id else "cli"
        )
        interactive = bool(request.interactive or params.get("interactive") is True)
        if interactive:
            params["interactive"] = True
        label = str(
            params.get("serviceName") or params.get("jiraTicketId") or params.get("repoSlug") or ""
        )
        now = iso_now()
        job = Job(
            id=request.job_id or new_job_id(label, request.type),
            type=request.type,
            workflow_path=workflow.path,
            params=params,
            trigger_source=trigger,
            status=QUEUED,
            phase=workflow.initial_phase_for(trigger),
            workflow_phases=workflow.phase_summaries(),
            interactive=interactive,
            budget=request.budget
            or Budget.model_validate(self.env.config.jobs.default_budget.model_dump()),
            campaign_parent_id=params.get("campaignParentId"),
            origin=request.origin,
            created_at=now,
            updated_at=now,
        )
        providers: set[str] = set()
        for phase in workflow.phases:
            if phase.agent is None and phase.status in PARKING:
                continue
            try:
                providers.add(select_model(job, phase, self.env).provider)
            except NoExecutor as exc:
                raise PluginRequired(
                    "executor",
                    _no_executor_help(str(exc), phase.name, phase.tier, phase.model, self.env),
                ) from exc
        for provider in sorted(providers):  # parameters an executor reads, e.g. params.script
            executor = self.env.executors.get(provider)
            if isinstance(executor, ValidatesParams):
                try:
                    executor.validate_params(params)
                except ValueError as exc:
                    raise InvalidRequest(str(exc)) from exc
        if request.jira_ticket_id:
            await self._attach_ticket(job, request.jira_ticket_id)
        try:
            await self.store.create(job)
        except JobExists:
            existing = await self.store.find(job.id) if request.job_id else None
            if existing is None:
                raise
            return existing, False  # the same dispatch, twice at once
        await self.store.log(
            job.id, f"[created] {workflow.display_name} ({workflow.path}), trigger {trigger}"
        )
        self.dispatcher.submit(job.id)
        return job, True

    async def _attach_ticket(self, job: Job, key: str) -> None:
        """Read the ticket the job is for: `params.ticket`, and the request if none given."""
        wanted = "jira" if self.env.plugins.get("tracker", "jira") is not None else None
        try:
            tracker: TrackerPlugin = self.env.plugins.resolve("tracker", wanted)
        except PluginResolutionError as exc:
            raise PluginRequired("tracker", f"jiraTicketId needs a tracker: {exc}") from exc
        try:
            issue = await tracker.get_issue(key)
        except PluginNotFoundError as exc:
            raise InvalidRequest(f"jiraTicketId: {exc}") from exc
        except PluginError as exc:
            raise UpstreamFailed(f"{tracker.id}: {exc}") from exc
        job.params["ticket"] = {
            "key": issue.key,
            "title": issue.title,
            "description": issue.description,
            "status": issue.status,
            "type": issue.issue_type,
            "url": issue.url,
        }
        if not job.params.get("description"):
            job.params["description"] = f"{issue.title}\n\n{issue.description}".strip()
        job.external_refs.append(
            ExternalRef(kind="ticket", plugin_id=tracker.id, external_id=issue.key, url=issue.url)
        )

    async def get(self, job_id: str) -> Job:
        return await self.store.get(job_id)

    async def list(self, query: JobQuery) -> tuple[list[Job], int]:
        return await self.store.backend.list_jobs(query)

    # --- controls ---------------------------------------------------------------------

    async def cancel(self, job_id: str, reason: str | None = None) -> Job:
        job = await self.store.get(job_id)
        if job.status == COMPLETE:
            raise Conflict("Job is already complete")
        if job.status == CANCELLED:
            return job

        def apply(j: Job) -> bool:
            if is_terminal(j.status):
                return False
            j.status = CANCELLED
            j.clear_wait()
            j.pending_prompt = None
            return True

        suffix = f": {reason}" if reason else ""
        if self.dispatcher.is_active(job_id):
            suffix += " — the current agent turn stops at the next safe boundary"
        job, written = await self.store.update(
            job_id, apply, note=f"[control] Job cancelled{suffix}"
        )
        if not written:
            if job.status == COMPLETE:
                raise Conflict("Job is already complete")
            return job
        self.dispatcher.withdraw(job_id)
        self.dispatcher.drop_events(job_id)
        self.dispatcher.interrupt(job_id)
        for hook in self.on_cancelled:
            await hook(job, reason)
        return job

    async def pause(self, job_id: str, reason: str | None = None) -> Job:
        job = await self.store.get(job_id)
        if job.paused:
            return job
        if is_stopped(job.status):
            raise Conflict(f"Job is {job.status}; there is nothing to pause")
        if not is_running(job.status):
            raise Conflict(f"Job is already parked ({job.status})")

        def apply(j: Job) -> bool:
            if not is_running(j.status):
                return False
            j.status = AWAITING_DEVELOPER_INPUT
            j.clear_wait()
            j.paused = True
            j.awaiting_event = PAUSE_LABEL
            return True

        suffix = f": {reason}" if reason else ""
        job, written = await self.store.update(
            job_id, apply, note=f"[control] Job paused by developer{suffix}"
        )
        if not written:
            raise Conflict(f"Job is {job.status}; it can no longer be paused")
        self.dispatcher.withdraw(job_id)
        self.dispatcher.interrupt(job_id)
        return job

    async def message(self, job_id: str, text: str) -> str:
        """Deliver a developer message; returns how: `live`, `next-phase` or `resumed`."""
        job = await self.store.get(job_id)
        if is_terminal(job.status):
            raise Conflict(f"Job is {job.status}; it cannot take messages")
        await self.store.log(job_id, f"[human] {text}")
        handle = self.dispatcher.handle(job_id)
        if is_running(job.status):
            if handle is not None and handle.in_turn:
                await handle.developer_messages.put(prompts.live_message(text))
                return "live"
            framed = prompts.live_message(text)

            def queue_for_next_phase(j: Job) -> bool:
                if not is_running(j.status):
                    return False
                j.pending_prompt = prompts.append_prompt(j.pending_prompt, framed)
                return True

            job, written = await self.store.update(job_id, queue_for_next_phase)
            if written:
                return "next-phase"
        await self.dispatcher.wake(job_id, prompts.developer_response(job, text))
        return "resumed"

    async def resume(
        self, job_id: str, from_phase: str | None = None, clear_session: bool = False
    ) -> Job:
        """Manual resume; at an interactive checkpoint it approves and advances."""
        job = await self.store.get(job_id)
        if job.status == CANCELLED:
            raise Conflict(
                "Job was cancelled; a cancelled job cannot be resumed (create a new job to "
                "run it again)"
            )
        if job.status == COMPLETE:
            raise Conflict("Job is complete; there is nothing to resume")
        if is_running(job.status):
            raise Conflict(f"Job is already {'queued' if job.status == QUEUED else 'running'}")
        phase_names = [p.name for p in job.workflow_phases]
        if from_phase is not None and phase_names and from_phase not in phase_names:
            raise InvalidRequest(
                f"Unknown phase {from_phase!r}; declared phases: {', '.join(phase_names)}"
            )
        approving = from_phase is None and job.awaiting_next_phase is not None
        target = from_phase or job.awaiting_next_phase or job.phase
        fresh = clear_session or target != job.phase
        if approving:
            note = f"[approval] Phase {job.phase} approved — advancing to {target}"
        elif target != job.phase or clear_session:
            note = f"[manual-resume] Restarting from phase: {target} (fresh session)"
        else:
            note = f"[manual-resume] Continuing phase: {target}"
        await self.store.log(job_id, note)
        return await self.dispatcher.wake(job_id, None, phase=target, fresh_session=fresh)

    async def set_interactive(self, job_id: str, interactive: bool) -> Job:
        job = await self.store.get(job_id)
        if is_stopped(job.status):
            raise Conflict(f"Job is {job.status}")

        def apply(j: Job) -> None:
            j.interactive = interactive
            j.params["interactive"] = interactive

        job, _ = await self.store.update(job_id, apply)
        await self.store.log(
            job_id, f"[control] Interactive checkpoints {'on' if interactive else 'off'}"
        )
        at_checkpoint = (job.awaiting_event or "").startswith(CHECKPOINT_LABEL_PREFIX)
        if not interactive and at_checkpoint and job.awaiting_next_phase:
            job = await self.resume(job_id)
        return job

    async def set_phase_override(
        self,
        job_id: str,
        phase: str,
        model: str | None,
        provider: str | None,
        clear: bool,
    ) -> dict[str, PhaseModelOverride]:
        job = await self.store.get(job_id)
        self._require_phase(job, phase)
        if not clear and not model:
            raise InvalidRequest("model is required unless clear is true")
        if provider is not None and self.env.executors.get(provider) is None:
            raise InvalidRequest(
                f"Unknown provider {provider!r} (available: {', '.join(self.env.executors.ids())})"
            )

        def apply(j: Job) -> None:
            if clear:
                j.phase_model_overrides.pop(phase, None)
            else:
                assert model is not None
                j.phase_model_overrides[phase] = PhaseModelOverride(model=model, provider=provider)

        job, _ = await self.store.update(job_id, apply)
        what = "cleared" if clear else f"{provider or 'default'}/{model}"
        await self.store.log(job_id, f"[control] Phase model override for {phase}: {what}")
        return job.phase_model_overrides

    async def rerun_phase(
        self, job_id: str, phase: str, model: str | None = None, provider: str | None = None
    ) -> Job:
        job = await self.store.get(job_id)
        self._require_phase(job, phase)
        if job.status == CANCELLED:
            raise Conflict("Job is cancelled")
        if is_running(job.status):
            raise Conflict("Job is running; pause it first")
        if model is not None:
            await self.set_phase_override(job_id, phase, model, provider, clear=False)
        if job.status == COMPLETE:

            def reopen(j: Job) -> bool:
                if j.status != COMPLETE:
                    return False
                j.status = AWAITING_DEVELOPER_INPUT
                return True

            await self.store.update(job_id, reopen)
            await self.store.log(job_id, f'[control] Reopening completed job to re-run "{phase}"')
        await self.store.log(job_id, f'[control] Re-running phase "{phase}"')
        return await self.resume(job_id, from_phase=phase, clear_session=True)

    async def set_budget(
        self, job_id: str, max_cost_usd: float | None, max_tokens: int | None
    ) -> Job:
        """Change the job's budget; a job parked on its budget then continues on resume."""
        budget = Budget(max_cost_usd=max_cost_usd, max_tokens=max_tokens)

        def apply(j: Job) -> None:
            j.budget = budget

        cost = f"${max_cost_usd:g}" if max_cost_usd is not None else "no cost limit"
        tokens = f"{max_tokens} tokens" if max_tokens is not None else "no token limit"
        job, _ = await self.store.update(job_id, apply, note=f"[budget] Set to {cost}, {tokens}")
        return job

    def _require_phase(self, job: Job, phase: str) -> None:
        names = [p.name for p in job.workflow_phases]
        if phase not in names:
            raise InvalidRequest(f"Unknown phase {phase!r}; declared phases: {', '.join(names)}")

    # --- artefacts --------------------------------------------------------------------

    def _artifact_file(self, job: Job, artifact_id: str) -> Path:
        artifact = job.find_artifact(artifact_id)
        if artifact is None:
            raise JobNotFound(f"{job.id}/artifacts/{artifact_id}")
        raw = artifact.data.get("path")
        if not isinstance(raw, str) or not raw:
            raise InvalidRequest("Artifact has no data.path to read")
        root = self.env.workdir(job.id).resolve()
        target = (root / raw).resolve()
        if Path(raw).is_absolute() or not target.is_relative_to(root):
            raise InvalidRequest("Artifact path escapes the job directory")
        return target

    async def artifact_content(self, job_id: str, artifact_id: str) -> tuple[bytes, str]:
        job = await self.store.get(job_id)
        target = await asyncio.to_thread(self._artifact_file, job, artifact_id)
        try:
            data = await asyncio.to_thread(target.read_bytes)
        except OSError as exc:
            raise JobNotFound(f"artifact content ({exc.strerror})") from exc
        content_type = _CONTENT_TYPES.get(target.suffix.lower())
        if content_type is None:
            content_type = mimetypes.guess_type(target.name)[0] or "text/plain"
        if content_type.startswith("text/") or content_type == "application/json":
            content_type += "; charset=utf-8"
        return data, content_type

    async def edit_artifact(self, job_id: str, artifact_id: str, content: str) -> Job:
        job = await self.store.get(job_id)
        target = await asyncio.to_thread(self._artifact_file, job, artifact_id)
        if target.suffix.lower() not in EDITABLE_ARTIFACT_SUFFIXES:
            allowed = " ".join(sorted(EDITABLE_ARTIFACT_SUFFIXES))
            raise UnsupportedType(f"Only {allowed} artefacts can be edited")
        encoded = content.encode("utf-8")
        if len(encoded) > MAX_ARTIFACT_EDIT_BYTES:
            raise PayloadTooLarge("Artefact content is larger than 2 MiB")
        if not await asyncio.to_thread(target.is_file):
            raise JobNotFound("artifact file no longer exists")
        await asyncio.to_thread(target.write_bytes, encoded)

        def stamp(j: Job) -> None:
            art = j.find_artifact(artifact_id)
            if art is not None:
                art.edited_at = iso_now()
                art.edited_by = "developer"

        job, _ = await self.store.update(job_id, stamp)
        art = job.find_artifact(artifact_id)
        assert art is not None
        rel = art.data.get("path")
        await self.store.log(
            job_id, f"[artifact-edit] {art.phase}/{art.kind}: developer edited {rel}"
        )
        return job

    # --- diff -------------------------------------------------------------------------

    async def diff(
        self,
        job_id: str,
        base: str | None = None,
        head: str | None = None,
        repo: str | None = None,
    ) -> dict[str, Any]:
        """The unified diff of the checkout `work/<jobId>/<repo>` (default: the job's
        `params.repoSlug`, else its only checkout), cut at 2 MiB (`truncated`).

        Without `head`: the working tree (untracked files included) against `base`
        (default HEAD). Raises `NoCheckout` when there is no checkout to look at."""
        job = await self.store.get(job_id)
        slug = job.params.get("repoSlug")
        try:
            name, path = await asyncio.to_thread(
                find_checkout,
                self.env.workdir(job.id),
                repo or None,
                slug if isinstance(slug, str) else None,
            )
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from exc
        try:
            result = await GitWorkspace(path).diff_capped(
                base or None, head or None, max_bytes=MAX_DIFF_RESPONSE_BYTES
            )
        except GitError as exc:
            if exc.kind == "invalid":
                raise InvalidRequest(str(exc)) from exc
            raise Conflict(f"Cannot read the checkout {name!r}: {exc}") from exc
        return {
            "repo": name,
            "base": result.base,
            "head": result.head,
            "diff": result.text,
            "truncated": result.truncated,
        }
