"""The job record and its parts (SPEC §4.1), serialised as camelCase JSON."""

from __future__ import annotations

import secrets
import string
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

# --- statuses -------------------------------------------------------------------------

QUEUED = "queued"
COMPLETE = "complete"
CANCELLED = "cancelled"
FAILED = "failed"
ESCALATED = "escalated"
AWAITING_PLAN_APPROVAL = "awaiting-plan-approval"
AWAITING_PR_MERGE = "awaiting-pr-merge"
AWAITING_DEVELOPER_INPUT = "awaiting-developer-input"
AWAITING_CHILDREN = "awaiting-children"
AWAITING_RATE_LIMIT = "awaiting-rate-limit"
AWAITING_BUDGET = "awaiting-budget"

TERMINAL = frozenset({COMPLETE, CANCELLED})
STOPPED = TERMINAL | {FAILED, ESCALATED}
PARKING = frozenset(
    {
        AWAITING_PLAN_APPROVAL,
        AWAITING_PR_MERGE,
        AWAITING_DEVELOPER_INPUT,
        AWAITING_CHILDREN,
        AWAITING_RATE_LIMIT,
        AWAITING_BUDGET,
        ESCALATED,
        FAILED,
    }
)
#: parked statuses an inbound event ends (the others wait for a developer or a timer)
WAITING_FOR_EVENTS = frozenset(
    {AWAITING_PR_MERGE, AWAITING_DEVELOPER_INPUT, AWAITING_PLAN_APPROVAL}
)
PAUSE_LABEL = "developer-input: paused by developer"
CHECKPOINT_LABEL_PREFIX = "developer-input: approval after "

#: `GET /jobs?group=` buckets.
STATUS_GROUPS = ("active", "waiting", "stopped")


def is_terminal(status: str) -> bool:
    return status in TERMINAL


def is_stopped(status: str) -> bool:
    """Stopped jobs end their SSE stream; failed/escalated stay resumable."""
    return status in STOPPED


def is_parked(status: str) -> bool:
    return status in PARKING


def is_running(status: str) -> bool:
    """A phase status (or `queued`): the job wants to run or is running."""
    return status not in PARKING and status not in TERMINAL


def status_group(status: str) -> str:
    if status in STOPPED:
        return "stopped"
    if status in PARKING:
        return "waiting"
    return "active"


# --- helpers --------------------------------------------------------------------------


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso_now() -> str:
    return utcnow().isoformat(timespec="milliseconds").replace("+00:00", "Z")


_SUFFIX_ALPHABET = string.ascii_lowercase + string.digits


def random_suffix(length: int) -> str:
    # one read of the system's randomness, not one per character: it is a slow system
    # call on some virtual machines (a slight bias towards a-d does not matter for ids)
    return "".join(_SUFFIX_ALPHABET[b % 36] for b in secrets.token_bytes(length))


class CamelModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, validate_assignment=False
    )

    def to_json(self, **kwargs: Any) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, **kwargs)


# --- parts of a job -------------------------------------------------------------------

WorkItemStatus = Literal["pending", "in-progress", "complete", "escalated"]


class WorkItem(CamelModel):
    name: str
    status: WorkItemStatus = "pending"
    loop_count: int = 0


class PrSeen(CamelModel):
    """What the poller last saw of a PR; changes from it become events."""

    state: str = "open"
    approval_count: int = 0
    comment_ids: list[str] = Field(default_factory=list)


class PrMapping(CamelModel):
    pr_id: int
    work_item: str
    repo_slug: str
    plugin_id: str | None = None
    url: str | None = None
    opened_at: str
    merged_at: str | None = None
    declined_at: str | None = None
    seen: PrSeen | None = None

    @property
    def is_open(self) -> bool:
        return self.merged_at is None and self.declined_at is None


class Checkout(CamelModel):
    """A repository cloned into the job directory by `scm_clone_repo`."""

    slug: str  # the directory under work/<jobId>/
    repo: str  # the repository key in the plugin's terms ("owner/name")
    plugin_id: str
    base_branch: str


class ExternalRef(CamelModel):
    """Something outside the runner that belongs to a job (a PR, a ticket): how inbound
    events and webhooks find the job."""

    kind: Literal["pull_request", "ticket"]
    plugin_id: str
    repo_key: str | None = None
    external_id: str
    url: str | None = None


class JobOrigin(CamelModel):
    """The issue or pull-request thread a job started by a trigger came from: where Coro
    replies with a link to the run, posts the job's questions and reads the answers."""

    rule_id: str
    #: one per event (the delivery or the comment, label, assignment, transition): a
    #: second delivery of the same event finds the job this one started
    event_key: str
    plugin_id: str  # the tracker or SCM plugin the thread lives in
    kind: Literal["issue", "pull_request"]
    key: str  # "owner/name#12" (GitHub) or "PROJ-12" (Jira)
    url: str | None = None
    author: str | None = None  # who started it
    #: the last comment of the thread already read (answers are the ones after it)
    seen_comment_id: str | None = None
    #: when the job's current question was posted in the thread (posted once per park)
    asked_at: str | None = None
    #: when Coro said in the thread that the job started (said once)
    replied_at: str | None = None
    #: the rule as the team cloud had it when it started the job (a `triggers.rules[]`
    #: entry); None: the rule `ruleId` of the runner's own config
    rule: dict[str, Any] | None = None


class Artifact(CamelModel):
    id: str
    phase: str
    kind: str
    title: str
    data: dict[str, Any] = Field(default_factory=dict)
    created_by: str
    created_at: str
    edited_at: str | None = None
    edited_by: str | None = None
    #: when the agent posted it again (same kind, title and path) and its data was replaced
    updated_at: str | None = None


class Insight(CamelModel):
    id: str
    phase: str
    category: str
    summary: str
    detail: str
    suggestion: str | None = None
    source_child_name: str | None = None
    status: Literal["pending", "approved", "rejected"] = "pending"
    suggested_layer: Literal["tenant", "repo"] | None = None
    user_layer: Literal["tenant", "repo"] | None = None
    created_at: str | None = None
    #: developer curation (`PATCH`/`DELETE /jobs/:id/insights/:insightId`): edits are kept
    #: beside the agent's text and win wherever the insight is shown
    edited_summary: str | None = None
    edited_detail: str | None = None
    edited_suggestion: str | None = None
    edited_by: str | None = None
    edited_at: str | None = None
    decided_by: str | None = None
    decided_at: str | None = None
    #: soft delete: status `rejected` and hidden from listings
    deleted_at: str | None = None

    @property
    def shown_summary(self) -> str:
        return self.edited_summary or self.summary

    @property
    def shown_detail(self) -> str:
        return self.edited_detail or self.detail

    @property
    def shown_suggestion(self) -> str | None:
        return self.edited_suggestion or self.suggestion


class TokenUsage(CamelModel):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    total_cost_usd: float = 0.0

    def add(self, other: PhaseUsage) -> None:
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cache_read_input_tokens += other.cache_read_input_tokens
        self.cache_creation_input_tokens += other.cache_creation_input_tokens
        self.total_cost_usd = round(self.total_cost_usd + other.cost_usd, 6)


class PhaseUsage(CamelModel):
    phase: str
    work_item: str | None = None
    visit: int = 1
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cost_usd: float = 0.0
    duration_ms: int = 0
    num_turns: int = 0
    model: str | None = None
    provider: str | None = None
    #: the visit is still running: the counts so far, updated after each round trip
    in_progress: bool = False


#: A budget's limits: beyond these bounds a number is a mistake, not a limit (and an
#: infinite one must never be stored as if it meant "no budget").
BudgetUsd = Annotated[float, Field(gt=0, le=1_000_000, allow_inf_nan=False)]
BudgetTokens = Annotated[int, Field(gt=0, le=1_000_000_000_000)]


class Budget(CamelModel):
    max_cost_usd: BudgetUsd | None = None
    max_tokens: BudgetTokens | None = None

    def exceeded(self, spent: TokenUsage, phase: PhaseUsage | None = None) -> str | None:
        """Why spending (so far, plus the running phase) has reached this budget, or None."""
        cost = spent.total_cost_usd + (phase.cost_usd if phase else 0.0)
        tokens = spent.input_tokens + spent.output_tokens
        if phase is not None:
            tokens += phase.input_tokens + phase.output_tokens
        if self.max_cost_usd is not None and cost >= self.max_cost_usd:
            return f"cost ${cost:.4f} reached the budget of ${self.max_cost_usd:.4f}"
        if self.max_tokens is not None and tokens >= self.max_tokens:
            return f"{tokens} tokens reached the budget of {self.max_tokens}"
        return None


class WorkflowPhaseSummary(CamelModel):
    name: str
    status: str
    agent: str | None = None
    interactive_checkpoint: bool = False


class PhaseModelOverride(CamelModel):
    model: str
    provider: str | None = None


class RateLimitInfo(CamelModel):
    provider: str
    kind: Literal["rate-limit", "overloaded"] = "rate-limit"
    resume_at: float  # epoch milliseconds
    retry_attempt: int = 1
    last_error_message: str | None = None


class ToolCallRecord(CamelModel):
    id: str
    name: str
    input: dict[str, Any] = Field(default_factory=dict)


class ToolResultRecord(CamelModel):
    tool_call_id: str
    output: str
    is_error: bool = False


class ConversationMessage(CamelModel):
    """Provider-neutral transcript entry; executors translate it to their wire format."""

    role: Literal["user", "assistant", "tool"]
    content: str = ""
    tool_calls: list[ToolCallRecord] = Field(default_factory=list)
    tool_results: list[ToolResultRecord] = Field(default_factory=list)
    #: set on the summary a context condensation left: how many earlier messages it replaced
    condensed: int | None = None


TriggerSource = Literal["cli", "dashboard", "jira", "webhook", "internal"]

# --- campaigns ------------------------------------------------------------------------

CampaignChildStatus = Literal[
    "pending", "ready", "dispatched", "complete", "failed", "escalated", "skipped", "cancelled"
]


class CampaignTrackerRef(CamelModel):
    """The tracker ticket a campaign child implements."""

    provider: str
    key: str
    url: str | None = None


class CampaignChild(CamelModel):
    """One unit of a campaign: a child job created when its dependencies are satisfied."""

    name: str
    description: str
    params: dict[str, Any] = Field(default_factory=dict)
    depends_on: list[str] = Field(default_factory=list)
    tracker_ref: CampaignTrackerRef | None = None
    job_id: str | None = None
    status: CampaignChildStatus = "pending"
    started_at: str | None = None
    completed_at: str | None = None


class WorkflowSwitch(CamelModel):
    """One lane switch (`switch_workflow` / `convert_to_campaign`)."""

    at: str
    from_path: str = Field(alias="from")
    to_path: str = Field(alias="to")
    from_phase: str
    to_phase: str
    reason: str
    by: Literal["switch_workflow", "convert_to_campaign"] = "switch_workflow"


class Job(CamelModel):
    id: str
    type: str = "job"
    workflow_path: str
    params: dict[str, Any] = Field(default_factory=dict)
    trigger_source: TriggerSource = "cli"
    status: str
    phase: str
    workflow_phases: list[WorkflowPhaseSummary] = Field(default_factory=list)
    interactive: bool = False
    paused: bool = False
    work_items: list[WorkItem] = Field(default_factory=list)
    current_work_item: str | None = None
    work_item_loop_count: int = 0
    pr_mappings: list[PrMapping] = Field(default_factory=list)
    external_refs: list[ExternalRef] = Field(default_factory=list)
    origin: JobOrigin | None = None
    checkouts: list[Checkout] = Field(default_factory=list)
    artifacts: list[Artifact] = Field(default_factory=list)
    insights: list[Insight] = Field(default_factory=list)
    token_usage: TokenUsage = Field(default_factory=TokenUsage)
    phase_usage: list[PhaseUsage] = Field(default_factory=list)
    phase_visits: dict[str, int] = Field(default_factory=dict)
    budget: Budget = Field(default_factory=Budget)
    awaiting_event: str | None = None
    awaiting_pr_id: int | None = None
    awaiting_next_phase: str | None = None
    escalation_message: str | None = None
    pending_prompt: str | None = None
    rate_limit_info: RateLimitInfo | None = None
    session_id: str | None = None
    conversation_history: list[ConversationMessage] = Field(default_factory=list)
    phase_model_overrides: dict[str, PhaseModelOverride] = Field(default_factory=dict)
    campaign_children: list[CampaignChild] | None = None
    campaign_parent_id: str | None = None
    #: insights of finished children, passed on to the children dispatched after them
    campaign_aggregated_insights: list[Insight] = Field(default_factory=list)
    workflow_path_history: list[WorkflowSwitch] = Field(default_factory=list)
    created_at: str
    updated_at: str

    def summary(self) -> dict[str, Any]:
        """The job without its transcript: what listings return."""
        return self.to_json(exclude={"conversation_history"})

    def find_work_item(self, name: str) -> WorkItem | None:
        return next((item for item in self.work_items if item.name == name), None)

    def find_artifact(self, artifact_id: str) -> Artifact | None:
        return next((a for a in self.artifacts if a.id == artifact_id), None)

    def clear_wait(self) -> None:
        """Forget what the job was waiting for (every status change out of a park)."""
        self.paused = False
        self.awaiting_event = None
        self.awaiting_pr_id = None
        self.awaiting_next_phase = None
        self.escalation_message = None
        self.rate_limit_info = None

    def scm_plugin_id(self, explicit: str | None = None, repo: str | None = None) -> str | None:
        """The SCM plugin the job names for `repo`: `explicit`, else the plugin its checkout
        of `repo` came from, else `params.gitProvider`; None leaves it to the defaults."""
        if explicit:
            return explicit
        checkout = next((c for c in self.checkouts if repo in (c.repo, c.slug)), None)
        if checkout is not None:
            return checkout.plugin_id
        provider = self.params.get("gitProvider")
        return provider if isinstance(provider, str) and provider else None

    def open_prs(self) -> list[PrMapping]:
        return [p for p in self.pr_mappings if p.is_open]

    def find_pr(self, pr_id: int, repo: str | None = None) -> PrMapping | None:
        return next(
            (p for p in self.pr_mappings if p.pr_id == pr_id and repo in (None, p.repo_slug)),
            None,
        )

    def unfinished_work_items(self) -> list[WorkItem]:
        return [w for w in self.work_items if w.status not in ("complete", "escalated")]

    def find_child(self, name: str) -> CampaignChild | None:
        return next((c for c in self.campaign_children or [] if c.name == name), None)


class LogEntry(CamelModel):
    """One stored log line: `line` is `"<ISO timestamp> <text>"`; `index` is 0-based."""

    index: int
    line: str
