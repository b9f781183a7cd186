"""The runner ↔ cloud WebSocket protocol (`WS /ws/runner`): frames, constants, rules.

Both ends import this module; it is the whole contract between them.

Connection
    The runner dials `<cloud.url>/ws/runner` with `Authorization: Bearer <runner token>`
    (or `?token=`); an unknown or revoked token gets HTTP 401 before the upgrade. Its
    first frame is `runner:register`; the cloud answers `runner:registered` (or closes
    with `CLOSE_PROTOCOL` when the major protocol version differs, `CLOSE_POLICY` when
    anything else comes first). Every frame is one JSON text object with a `type`.
    The team is always the token's: no frame names a team.

Who owns what
    The runner owns the jobs it runs: its local state backend is the truth for them and
    it replicates every committed change to the cloud (`job:update` with the whole job
    and a per-job revision that only grows, `job:log` with indexed lines). Both are
    idempotent, so a replay after a reconnect stores nothing twice. The cloud writes a
    job itself only while no runner owns it (queued for dispatch); everything else it
    asks the owning runner to do (`event:*`), through a durable queue, so a command for
    an offline runner waits for it.

RPCs and acknowledgements (both directions)
    A frame with a `messageId` is answered by `rpc:response{messageId, ok, data|error}`.
    The receiver de-duplicates by `messageId`: a retried request (same id) gets the first
    answer again and has no second effect. A sender retries after `RPC_TIMEOUT_SECONDS`
    with the same id, at most `RPC_MAX_RETRIES` times while connected, and again after
    a reconnect. Errors carry an HTTP-like `status` (400, 404, 409, ...) so the cloud can
    answer its REST caller exactly as the runner's own API would.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from pydantic.alias_generators import to_camel

PROTOCOL_VERSION = "1.0.0"
HEARTBEAT_INTERVAL_SECONDS = 30.0
#: a runner not heard of for this long is offline (its socket is closed by the cloud)
HEARTBEAT_TIMEOUT_SECONDS = 90.0
RPC_TIMEOUT_SECONDS = 30.0
RPC_MAX_RETRIES = 3
#: log lines of one job are sent together when they come within this interval
LOG_BATCH_INTERVAL_SECONDS = 0.1
#: bounds a peer enforces on what it receives
MAX_FRAME_BYTES = 8 * 1024 * 1024
MAX_LOG_LINES_PER_FRAME = 5000
#: reconnect delays (seconds): min(cap, base * 2**attempt), with full jitter
RECONNECT_BASE_SECONDS = 0.5
RECONNECT_CAP_SECONDS = 30.0

# close codes
CLOSE_NORMAL = 1000  # reason "replaced" when the same runner id connects again
CLOSE_GOING_AWAY = 1001  # the cloud is shutting down: reconnect (to another instance)
CLOSE_POLICY = 1008  # anything but runner:register first (later bad frames: an error answer)
CLOSE_TOO_BIG = 1009
CLOSE_PROTOCOL = 4000  # incompatible protocol version: do not reconnect blindly
CLOSE_REVOKED = 4001  # the runner token was revoked: do not reconnect
CLOSE_TIMEOUT = 4002  # no heartbeat within HEARTBEAT_TIMEOUT_SECONDS


def major(version: str) -> str:
    return version.split(".", 1)[0]


class Frame(BaseModel):
    """A frame on the wire: camelCase keys; unknown keys ignored (a minor version may
    add fields)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


JobId = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._-]+$")]
MessageId = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._:-]+$")]


class Request(Frame):
    message_id: MessageId


# --- runner → cloud -----------------------------------------------------------------


class RunnerRegister(Frame):
    type: Literal["runner:register"]
    runner_id: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._-]+$")]
    hostname: Annotated[str, Field(max_length=255)] = ""
    protocol_version: Annotated[str, Field(max_length=32)]
    #: jobs it runs at once at most (`jobs.maxConcurrent`)
    capacity: Annotated[int, Field(ge=0, le=10_000)] = 1
    active_job_ids: Annotated[list[JobId], Field(max_length=10_000)] = []
    version: Annotated[str, Field(max_length=64)] = ""  # the runner's Coro version


class RunnerHeartbeat(Frame):
    type: Literal["runner:heartbeat"]
    active_job_ids: Annotated[list[JobId], Field(max_length=10_000)] = []
    capacity: Annotated[int, Field(ge=0, le=10_000)] | None = None
    uptime_ms: Annotated[int, Field(ge=0)] | None = None


class RunnerList(Request):
    """The runners of the team (answer `{runners: [...]}`, as `GET
    /teams/:teamId/runners`): for the runner's own dashboard."""

    type: Literal["runner:list"]


class JobUpdate(Request):
    """The job as the runner stored it (create or change): the cloud keeps it when `rev`
    is higher than the one it has."""

    type: Literal["job:update", "job:create"]
    job_id: JobId
    rev: Annotated[int, Field(ge=1)]
    job: dict[str, Any]  # a `Job` as JSON (validated by the cloud)


class LogLine(Frame):
    index: Annotated[int, Field(ge=0, le=2**63 - 1)]
    line: Annotated[str, Field(max_length=1_000_000)]


class JobLog(Request):
    """Stored log lines (with their indexes): the cloud keeps the ones it lacks."""

    type: Literal["job:log"]
    job_id: JobId
    entries: Annotated[list[LogLine], Field(min_length=1, max_length=MAX_LOG_LINES_PER_FRAME)]


class JobDelete(Request):
    type: Literal["job:delete"]
    job_id: JobId


class JobGet(Request):
    type: Literal["job:get"]
    job_id: JobId


class JobList(Request):
    type: Literal["job:list"]
    limit: Annotated[int, Field(ge=1, le=500)] = 50
    offset: Annotated[int, Field(ge=0)] = 0


class JobListChildren(Request):
    type: Literal["job:listChildren"]
    parent_job_id: JobId


class JobLogGet(Request):
    type: Literal["job:logGet"]
    job_id: JobId
    start: Annotated[int, Field(ge=0)] = 0
    end: int = -1  # inclusive; -1: to the end


class RefModel(Frame):
    kind: Literal["pull_request", "ticket"]
    plugin_id: Annotated[str, Field(min_length=1, max_length=64)]
    repo_key: Annotated[str, Field(max_length=500)] | None = None
    external_id: Annotated[str, Field(min_length=1, max_length=500)]


class JobMapExternalRef(Request):
    type: Literal["job:mapExternalRef"]
    job_id: JobId
    ref: RefModel


class JobByExternalRef(Request):
    type: Literal["job:byExternalRef"]
    ref: RefModel


class ProposalCreate(Request):
    type: Literal["proposal:create"]
    proposal: dict[str, Any]  # a proposal as the runner stores it (its id included)


class ProposalList(Request):
    type: Literal["proposal:list"]
    status: Literal["pending", "approved", "rejected", "applied"] | None = None


class ProposalUpdate(Request):
    type: Literal["proposal:update"]
    proposal_id: Annotated[str, Field(min_length=1, max_length=200)]
    updates: dict[str, Any]


RunnerFrame = Annotated[
    RunnerRegister
    | RunnerHeartbeat
    | RunnerList
    | JobUpdate
    | JobLog
    | JobDelete
    | JobGet
    | JobList
    | JobListChildren
    | JobLogGet
    | JobMapExternalRef
    | JobByExternalRef
    | ProposalCreate
    | ProposalList
    | ProposalUpdate,
    Field(discriminator="type"),
]
runner_frame: TypeAdapter[RunnerFrame] = TypeAdapter(RunnerFrame)


def _frame_types(union: Any) -> frozenset[str]:
    """The `type` values of a discriminated union of frames."""
    members = get_args(get_args(union)[0])
    return frozenset(t for m in members for t in get_args(m.model_fields["type"].annotation))


#: every `type` a runner may send
RUNNER_FRAME_TYPES = _frame_types(RunnerFrame)


# --- both directions ------------------------------------------------------------------


class RpcResponse(Frame):
    type: Literal["rpc:response"] = "rpc:response"
    message_id: Annotated[str, Field(max_length=100)]
    ok: bool
    data: Any = None
    error: str | None = None
    #: for a failed command: the status the runner's own API would have answered
    status: int | None = None


# --- cloud → runner -------------------------------------------------------------------


class RunnerRegistered(Frame):
    type: Literal["runner:registered"] = "runner:registered"
    runner_id: str
    team_id: str
    team_name: str = ""
    protocol_version: str = PROTOCOL_VERSION
    heartbeat_interval_ms: int = int(HEARTBEAT_INTERVAL_SECONDS * 1000)
    #: plugins whose webhooks reach the team (a secret is set): while connected, the
    #: runner need not poll them — their events arrive as `event:pluginWebhook`
    webhook_plugins: list[str] = []


class RunnerSettings(Frame):
    """What changed of `runner:registered` since (e.g. a webhook secret set or removed)."""

    type: Literal["runner:settings"] = "runner:settings"
    webhook_plugins: list[str] = []


class EventDispatch(Request):
    """Create and run a job: `request` is the body of `POST /jobs`; the runner creates
    it under `jobId` (an existing job of that id: nothing new, the answer is the job)."""

    type: Literal["event:dispatch"] = "event:dispatch"
    job_id: JobId
    request: dict[str, Any]
    #: the thread a job started by a team trigger came from (a `JobOrigin`)
    origin: dict[str, Any] | None = None


class EventCancel(Request):
    type: Literal["event:cancel"] = "event:cancel"
    job_id: JobId
    reason: str | None = None


class EventPause(Request):
    type: Literal["event:pause"] = "event:pause"
    job_id: JobId
    reason: str | None = None


class EventResume(Request):
    type: Literal["event:resume"] = "event:resume"
    job_id: JobId
    from_phase: str | None = None
    clear_session: bool = False


class EventMessage(Request):
    type: Literal["event:message"] = "event:message"
    job_id: JobId
    message: str


class EventRequest(Request):
    """Any other call of the runner's job API for one of its jobs (campaign child
    controls, artefact content, delete, ...): the runner answers as its HTTP API would,
    `data = {status, contentType, bodyBase64}`. Only paths under `/jobs/<jobId>`."""

    type: Literal["event:request"] = "event:request"
    job_id: JobId
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
    path: Annotated[str, Field(max_length=2000)]
    body: Any = None


class WebhookComment(Frame):
    """A new comment a delivery reports in a job's origin thread."""

    plugin_id: str  # the thread's plugin (`origin.pluginId`)
    thread: str  # `origin.key`: `owner/name#12`, `PROJ-12`
    comment_id: str
    author: str
    body: str
    author_association: str | None = None


class EventPluginWebhook(Request):
    """A verified webhook delivery, for the job it concerns (`jobId`, when the cloud
    found one)."""

    type: Literal["event:pluginWebhook"] = "event:pluginWebhook"
    plugin_id: str
    job_id: JobId | None = None
    delivery_id: str | None = None
    headers: dict[str, str]  # lower-cased names
    raw_body_base64: str
    received_at: str
    #: a comment in the thread the job came from (`Job.origin`), as the cloud read it:
    #: routed to the job by its thread, for its question's answer
    comment: WebhookComment | None = None


class ProposalApply(Request):
    type: Literal["proposal:apply"] = "proposal:apply"
    proposal_id: str
    files: list[dict[str, str]]  # [{path, content}], paths relative to the tenant layer


CloudCommand = Annotated[
    EventDispatch
    | EventCancel
    | EventPause
    | EventResume
    | EventMessage
    | EventRequest
    | EventPluginWebhook
    | ProposalApply,
    Field(discriminator="type"),
]
CloudFrame = Annotated[
    RunnerRegistered
    | RunnerSettings
    | RpcResponse
    | EventDispatch
    | EventCancel
    | EventPause
    | EventResume
    | EventMessage
    | EventRequest
    | EventPluginWebhook
    | ProposalApply,
    Field(discriminator="type"),
]
cloud_command: TypeAdapter[CloudCommand] = TypeAdapter(CloudCommand)
cloud_frame: TypeAdapter[CloudFrame] = TypeAdapter(CloudFrame)
