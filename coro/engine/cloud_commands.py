"""The commands a hybrid runner takes from its team cloud, answered as its own API would.

The cloud asks the runner that owns a job to change it (`coro.domain.cloud_protocol`):
`event:dispatch` creates a job under the cloud's id (idempotent: `JobService.create`);
`event:cancel`, `event:pause`, `event:resume` and `event:message` are the runner's own
control routes, and `event:request` any other call of its job API, both answered by the
API itself in process (the same answers and errors a local caller gets);
`event:pluginWebhook` wakes jobs as the PR poller would, or answers the question of the
jobs asking in the thread it comes from; `proposal:apply` writes an approved proposal
into the tenant layer. A dispatched job started by a team trigger (`origin`) gets its
pull request's branches if the webhook lacked them, and its reply in the thread. Errors
carry the status the runner's HTTP API gives the same error (400, 404, 409, ...).

Two things come from the API layer above, once it is built (`use_api`): how a
`POST /jobs` body becomes a `NewJob` (its validation), and the in-process call of the
API for `event:request`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from coro.domain.cloud_protocol import (
    CloudCommand,
    EventCancel,
    EventDispatch,
    EventPause,
    EventPluginWebhook,
    EventRequest,
    EventResume,
    ProposalApply,
    RpcResponse,
)
from coro.domain.models import JobOrigin, iso_now
from coro.engine.dispatcher import Dispatcher
from coro.engine.env import EngineEnv
from coro.engine.service import (
    Conflict,
    InvalidRequest,
    JobService,
    NewJob,
    PayloadTooLarge,
    PluginRequired,
    UnsupportedType,
    UpstreamFailed,
)
from coro.engine.thread_replies import ThreadReplies, origin_rule
from coro.engine.triggers.launch import complete_pull_request, reply_once
from coro.engine.webhooks import answer_from_webhook, events_from_webhook
from coro.executors import PluginNotFound
from coro.intelligence.proposals import (
    MAX_FILE_BYTES,
    MAX_FILES,
    ProposalError,
    write_files_atomically,
)
from coro.state.backend import JobNotFound
from coro.state.proposals import ProposalConflict, ProposalFile, ProposalNotFound

logger = logging.getLogger(__name__)

#: how long an in-process API call may take before the cloud is told 504
API_CALL_TIMEOUT_SECONDS = 60.0

#: engine errors → the status the runner's HTTP API answers them with (coro.api.app)
ERROR_STATUS: tuple[tuple[type[Exception], int], ...] = (
    (JobNotFound, 404),
    (PluginNotFound, 404),
    (ProposalNotFound, 404),
    (InvalidRequest, 400),
    (ProposalError, 400),
    (ValidationError, 400),
    (PluginRequired, 409),
    (Conflict, 409),
    (ProposalConflict, 409),
    (PayloadTooLarge, 413),
    (UnsupportedType, 415),
    (UpstreamFailed, 502),
)


@dataclass(frozen=True)
class ApiAnswer:
    status: int
    content_type: str
    body: bytes


#: `(method, path, JSON body or None) -> answer`: the runner's API, called in process
ApiCall = Callable[[str, str, Any], Awaitable[ApiAnswer]]
#: a `POST /jobs` body → the job to create (raises `InvalidRequest`)
JobRequestParser = Callable[[dict[str, Any]], NewJob]


class CommandFailed(Exception):
    def __init__(self, status: int, error: str, data: Any = None) -> None:
        super().__init__(error)
        self.status = status
        self.data = data


def error_status(exc: Exception) -> int | None:
    for kind, status in ERROR_STATUS:
        if isinstance(exc, kind):
            return status
    return None


class CloudCommands:
    def __init__(
        self,
        env: EngineEnv,
        jobs: JobService,
        dispatcher: Dispatcher,
        thread_replies: ThreadReplies | None = None,
    ) -> None:
        self.env = env
        self.jobs = jobs
        self.dispatcher = dispatcher
        #: takes the answers to questions asked in threads, forwarded from webhooks
        self.thread_replies = thread_replies
        self._api: ApiCall | None = None
        self._parse_job: JobRequestParser | None = None

    def use_api(self, call: ApiCall, parse_job_request: JobRequestParser) -> None:
        """What the API layer lends: its in-process call, and its `POST /jobs` parser."""
        self._api = call
        self._parse_job = parse_job_request

    async def handle(self, command: CloudCommand) -> RpcResponse:
        """Run one command; the answer (never an exception)."""
        message_id = command.message_id
        try:
            data = await self._run(command)
        except CommandFailed as exc:
            return RpcResponse(
                message_id=message_id, ok=False, status=exc.status, error=str(exc), data=exc.data
            )
        except Exception as exc:
            status = error_status(exc)
            if status is None:
                logger.exception("cloud command %s failed", command.type)
                return RpcResponse(
                    message_id=message_id,
                    ok=False,
                    status=500,
                    error="Internal error; see the runner's log",
                )
            return RpcResponse(message_id=message_id, ok=False, status=status, error=str(exc))
        return RpcResponse(message_id=message_id, ok=True, data=data)

    async def _run(self, command: CloudCommand) -> Any:
        if isinstance(command, EventDispatch):
            return await self._dispatch(command)
        if isinstance(command, EventRequest):
            return await self._request(command)
        if isinstance(command, EventPluginWebhook):
            return await self._webhook(command)
        if isinstance(command, ProposalApply):
            return await self._apply_proposal(command)
        # the controls: the runner's own routes, for their exact answers and errors
        job_path = f"/jobs/{command.job_id}"
        if isinstance(command, EventCancel | EventPause):
            verb = "cancel" if isinstance(command, EventCancel) else "pause"
            body = {"reason": command.reason} if command.reason is not None else None
            return await self._control(f"{job_path}/{verb}", body)
        if isinstance(command, EventResume):
            resume: dict[str, Any] = {"clearSession": command.clear_session}
            if command.from_phase is not None:
                resume["fromPhase"] = command.from_phase
            return await self._control(f"{job_path}/resume", resume)
        return await self._control(f"{job_path}/message", {"message": command.message})

    async def _dispatch(self, command: EventDispatch) -> Any:
        if self._parse_job is None:
            raise CommandFailed(503, "the runner's API is not up yet")
        request = self._parse_job(command.request)
        request.job_id = command.job_id
        if command.origin is not None:
            request.origin = JobOrigin.model_validate(command.origin)
            if await self.env.store.find(command.job_id) is None:
                await complete_pull_request(request, self.env.plugins)
        job = await self.jobs.create(request)
        origin = job.origin
        if origin is not None and origin.replied_at is None:
            # the cloud made the job from a webhook: the thread hears of it from here
            rule = origin_rule(self.env.config, origin)
            if rule is not None:
                await reply_once(self.env.store, self.env.config, self.env.plugins, job, rule)
                job = await self.jobs.get(job.id)
        return job.to_json()

    async def _call(self, method: str, path: str, body: Any) -> ApiAnswer:
        if self._api is None:
            raise CommandFailed(503, "the runner's API is not up yet")
        try:
            return await asyncio.wait_for(self._api(method, path, body), API_CALL_TIMEOUT_SECONDS)
        except TimeoutError:
            raise CommandFailed(504, "the runner's API did not answer in time") from None

    async def _control(self, path: str, body: Any) -> Any:
        """POST to one of the runner's control routes: its JSON answer, or its error (the
        whole error body as `data`, so extra fields such as `missingKind` go along)."""
        answer = await self._call("POST", path, body)
        try:
            data = json.loads(answer.body) if answer.body else None
        except ValueError:
            data = None
        if answer.status >= 400:
            raise CommandFailed(answer.status, _error_text(answer), data)
        return data

    async def _request(self, command: EventRequest) -> dict[str, Any]:
        """Any call of the job's API: answered as the API answers it (`ok` even for an
        error status: the cloud hands the answer on byte for byte)."""
        parts = urlsplit(command.path)
        path = parts.path
        prefix = f"/jobs/{command.job_id}"
        segments = path.split("/")
        if (
            parts.scheme
            or parts.netloc
            or not (path == prefix or path.startswith(prefix + "/"))
            or any(s in (".", "..") for s in segments)
            or "%" in path
        ):
            raise InvalidRequest(f"only paths under {prefix} can be requested")
        if path.rstrip("/") == f"{prefix}/stream":
            raise InvalidRequest("the log stream is served by the cloud from its mirror")
        await self.jobs.get(command.job_id)  # 404 for a job this runner does not have
        target = path + (f"?{parts.query}" if parts.query else "")
        answer = await self._call(command.method, target, command.body)
        return {
            "status": answer.status,
            "contentType": answer.content_type,
            "bodyBase64": base64.b64encode(answer.body).decode("ascii"),
        }

    async def _webhook(self, command: EventPluginWebhook) -> dict[str, Any]:
        if self.thread_replies is not None:
            answer = await answer_from_webhook(self.thread_replies, command)
            if answer not in (None, "no-question"):
                return {"events": 0, "jobIds": [], "answer": answer}
        events = await events_from_webhook(self.env.plugins, command, self.env.store)
        if events:
            await self.dispatcher.deliver(events)
        return {"events": len(events), "jobIds": sorted({e.job_id for e in events})}

    async def _apply_proposal(self, command: ProposalApply) -> dict[str, Any]:
        files = [ProposalFile.model_validate(item) for item in command.files]
        if not files:
            raise InvalidRequest("files: a proposal changes at least one file")
        if len(files) > MAX_FILES:
            raise InvalidRequest(f"files: at most {MAX_FILES} files per proposal")
        for file in files:
            if len(file.content.encode("utf-8")) > MAX_FILE_BYTES:
                raise PayloadTooLarge(f"files: {file.path!r} is larger than {MAX_FILE_BYTES} bytes")
        root = self.env.layers.tenant_dir
        try:
            written = await asyncio.to_thread(write_files_atomically, root, files)
        except OSError as exc:
            raise Conflict(f"Could not write the tenant layer: {exc.strerror}") from exc
        store = self.env.store.backend.proposals
        proposal = await store.get(command.proposal_id)
        if proposal is not None:
            now = iso_now()
            proposal = await store.update(
                proposal.id,
                status="approved",
                reviewed_by=proposal.reviewed_by or "team cloud",
                decided_at=proposal.decided_at or now,
                applied_at=now,
            )
            await self.env.store.log(
                proposal.job_id,
                f"[proposal] {proposal.id} applied from the team cloud: wrote "
                f"{len(written)} file(s) to the tenant layer ({', '.join(written)})",
            )
        return {"applied": command.proposal_id, "written": written}


def _error_text(answer: ApiAnswer) -> str:
    try:
        body = json.loads(answer.body)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])
    return f"HTTP {answer.status}"
