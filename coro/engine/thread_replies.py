"""Replies where the question was asked: a job that came from an issue or a pull request
(`Job.origin`) asks its question in that thread, and an answer there resumes it.

When such a job parks waiting for someone — `awaiting-developer-input` (an agent's
`developer-input: …` question, or an interactive checkpoint) or `awaiting-plan-approval`
— Coro posts the question as a comment, once per park: the park is claimed on the job
(`origin.askedAt`) by a conditional update before the comment is posted, and the
comment's id becomes `origin.seenCommentId`, so neither a restart nor a second runner
on the same database posts it twice. A paused job asks nothing (its developer paused
it). Leaving the park clears `askedAt`; the next park asks again.

The threads of the jobs parked with a question are read every
`triggers.pollIntervalSeconds` (only those jobs: an in-memory index fed by
`JobStore.observers` and, at start, by one query for parked jobs). The comments after
`seenCommentId` are judged in order: Coro's own comments (they start with
`coro_comment_prefix`) are skipped, comments by users who may not answer are skipped
and logged, and the first by a permitted user is the answer. `seenCommentId` moves past
everything judged (claimed by a conditional update before the answer is delivered, so an
answer is applied once), then the answer goes through `JobService`: `approve` / `lgtm`
(the whole reply) at an interactive checkpoint approves it as `POST /jobs/:id/resume`
does; any other answer is a developer message, exactly `POST /jobs/:id/message`.

Who may answer: the rule's `permittedUsers` (`triggers.rules[]` found by
`origin.ruleId`) when set; otherwise the origin's author and, where the provider tells
(GitHub's `author_association`), the repository's owners, members and collaborators.
Jobs without an origin, whose rule is gone or says `reply: false`, are left alone.

Threads: an `issue` origin is the tracker plugin `origin.pluginId` (`comment`,
`list_comments`); a `pull_request` origin is the pull request's conversation through
the SCM plugin `origin.pluginId` (`post_comment`, `pr_status`), the plugin that owns
pull requests for the PR poller and the `scm_*` tools, on every forge (the
`github-issues` tracker refuses pull requests on purpose).

In hybrid mode the team cloud may forward a thread's comment from a webhook:
`ThreadReplies.receive_comment` applies the same rules to it, and while the threads of
a plugin reach the runner so (`webhooks`), they are not read. A job the team cloud
started carries its team rule (`origin.rule`), which stands for the config's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from pydantic import ValidationError

from coro.config import CoroConfig
from coro.config.triggers import TriggerRule
from coro.domain.errors import PluginError
from coro.domain.models import (
    AWAITING_DEVELOPER_INPUT,
    AWAITING_PLAN_APPROVAL,
    CHECKPOINT_LABEL_PREFIX,
    Job,
    JobOrigin,
    iso_now,
)
from coro.engine.env import EngineEnv
from coro.engine.service import Conflict, JobService
from coro.plugins.scm.base import ScmPlugin
from coro.plugins.trackers.base import TrackerComment
from coro.state.backend import JobNotFound
from coro.state.scan import walk_jobs
from coro.state.store import JobChange

logger = logging.getLogger(__name__)

#: the parks that wait for a person's answer
ASKING = frozenset({AWAITING_DEVELOPER_INPUT, AWAITING_PLAN_APPROVAL})
#: GitHub's `author_association` values that may answer when the rule names nobody
MAINTAINERS = frozenset({"OWNER", "MEMBER", "COLLABORATOR"})
#: how long stopping waits for the job being tended
STOP_GRACE_SECONDS = 5.0
#: the limit of `POST /jobs/:id/message`, which an answer becomes
MAX_ANSWER_CHARS = 100_000
#: a reply that is only one of these approves a checkpoint
_APPROVAL = re.compile(r"^\s*/?(?:approve|approved|lgtm)\s*[.!]*\s*$", re.IGNORECASE)
#: how every comment Coro posts in a thread starts (see `coro_comment_prefix`)
_OWN = re.compile(r"^\s*Coro \(job `?[A-Za-z0-9._-]+`?\)")

Verdict = Literal["resumed", "approved", "ignored", "no-question"]


def coro_comment_prefix(job_id: str) -> str:
    """How a comment Coro posts in a job's thread starts: comments that start so are
    never taken as anyone's answer (whoever the token posting them belongs to)."""
    return f"Coro (job `{job_id}`)"


def is_coro_comment(body: str) -> bool:
    return _OWN.match(body) is not None


def run_link(config: CoroConfig, job_id: str) -> str:
    """The run's page on the dashboard (`notifications.dashboardUrl`, else the runner)."""
    base = config.notifications.dashboard_url or f"http://{config.host}:{config.port}"
    return f"{base.rstrip('/')}/dashboard/#/runs/{job_id}"


# --- threads ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ThreadComment:
    id: str
    author: str
    body: str
    author_association: str | None = None


@runtime_checkable
class _ListsComments(Protocol):
    """A tracker that can read a thread back (`github-issues`, `jira`)."""

    async def list_comments(self, key: str) -> list[TrackerComment]: ...

    async def comment(self, key: str, body: str) -> TrackerComment: ...


class _Thread(Protocol):
    async def post(self, body: str) -> str:
        """Post a comment; its id."""

    async def comments(self) -> list[ThreadComment]:
        """Every comment, oldest first."""


@dataclass(frozen=True)
class _IssueThread:
    tracker: _ListsComments
    key: str

    async def post(self, body: str) -> str:
        return (await self.tracker.comment(self.key, body)).id

    async def comments(self) -> list[ThreadComment]:
        found = await self.tracker.list_comments(self.key)
        return [ThreadComment(c.id, c.author, c.body, c.author_association) for c in found]


@dataclass(frozen=True)
class _PrThread:
    scm: ScmPlugin
    repo: str
    pr_id: int

    async def post(self, body: str) -> str:
        return (await self.scm.post_comment(self.repo, self.pr_id, body)).id

    async def comments(self) -> list[ThreadComment]:
        status = await self.scm.pr_status(self.repo, self.pr_id)
        return [
            ThreadComment(c.id, c.author, c.body, c.author_association) for c in status.comments
        ]


class _NoThread(Exception):
    """The origin's thread cannot be reached (the plugin is missing, the key is bad)."""


# --- the job's question ---------------------------------------------------------------------


def asking(job: Job) -> bool:
    """Whether the job is parked waiting for a person's answer."""
    return job.status in ASKING and not job.paused


def question_comment(job: Job, link: str) -> str:
    """The comment asking the job's question in its thread."""
    head = coro_comment_prefix(job.id)
    label = (job.awaiting_event or "").strip()
    question = ""
    if label.startswith("developer-input:") and not label.startswith(CHECKPOINT_LABEL_PREFIX):
        question = label.removeprefix("developer-input:").strip()
    lines: list[str]
    if job.awaiting_next_phase is not None or job.status == AWAITING_PLAN_APPROVAL:
        then = f", then **{job.awaiting_next_phase}**" if job.awaiting_next_phase else ""
        default = (
            "Approve the plan?"
            if job.status == AWAITING_PLAN_APPROVAL
            else f"Approve the results of phase {job.phase}?"
        )
        lines = [f"{head} waits for approval of phase **{job.phase}**{then}:", ""]
        lines += [_quote(question or default), ""]
        artefacts = [a for a in job.artifacts if a.phase == job.phase][-10:]
        if artefacts:
            lines.append("What the phase produced (on the run's page):")
            lines += [f"- {a.kind}: {a.title}" for a in artefacts]
            lines.append("")
        what = "approve it" if job.awaiting_next_phase else "answer"
        lines.append(f"Reply `approve` (or `lgtm`) to {what}, or reply with the changes you want.")
    else:
        lines = [f"{head} needs an answer to go on (phase **{job.phase}**):", ""]
        lines += [_quote(question or label or "The job waits for developer input."), ""]
        lines.append("Reply in this thread: the reply goes to the job as a developer message.")
    lines += ["", f"Run: {link}"]
    return "\n".join(lines)


def _quote(text: str) -> str:
    return "\n".join(f"> {line}" for line in text.splitlines() or [""])


def _unquoted(body: str) -> str:
    """The reply without the lines it quotes (a quote reply repeats the question)."""
    kept = [line for line in body.splitlines() if not line.lstrip().startswith(">")]
    return "\n".join(kept).strip()


def comments_after(comments: Sequence[ThreadComment], seen: str | None) -> list[ThreadComment]:
    """The comments after `seen`. Without `seen` in the list (deleted), numeric ids
    (GitHub, Jira) still order them; otherwise nothing counts as new, so an old comment
    is never taken for an answer."""
    ids = [c.id for c in comments]
    if seen is None:
        return []
    if seen in ids:
        return list(comments[ids.index(seen) + 1 :])
    if seen.isdigit():
        return [c for c in comments if c.id.isdigit() and int(c.id) > int(seen)]
    return []


def _is_after(comment_id: str, seen: str | None) -> bool:
    if seen is None or comment_id == seen:
        return False
    if seen.isdigit() and comment_id.isdigit():
        return int(comment_id) > int(seen)
    return True  # ids that do not order: a comment a webhook reports is a new one


# --- the service ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Judged:
    comment: ThreadComment
    note: str | None  # why it is not the answer (None: it is)


class ThreadReplies:
    """Posts parked jobs' questions in their origin threads and resumes them with the
    answers (see the module docstring). `observe` goes on `JobStore.observers`."""

    def __init__(
        self,
        env: EngineEnv,
        jobs: JobService,
        *,
        webhooks: Callable[[str], bool] | None = None,
    ) -> None:
        self.env = env
        self.jobs = jobs
        #: plugins whose threads' comments arrive as webhooks now: not read
        self.webhooks = webhooks or (lambda plugin_id: False)
        #: jobs parked with a question (asked or still to ask): the threads to read
        self._watched: set[str] = set()
        #: when each watched job parked, as this process saw it (`updatedAt` of the park)
        self._parked_at: dict[str, str] = {}
        #: jobs to look at before the next poll (a park, or a park ending)
        self._dirty: set[str] = set()
        #: the last problem logged for a job's thread (logged once until it changes)
        self._problems: dict[str, str] = {}
        self._wakeup = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Watch the jobs already parked with an origin, then run in the background."""
        # a page at a time: thousands of jobs may be parked, all parsed at once they
        # would leave the runner ~20 KiB of memory per job long after
        async for job in walk_jobs(self.env.store.backend, ASKING):
            if job.origin is not None and asking(job):
                self._watched.add(job.id)
                self._dirty.add(job.id)
        self._task = asyncio.create_task(self._loop(), name="thread-replies")

    async def stop(self) -> None:
        """Stop after the job being tended (a question claimed is posted and recorded;
        waiting at most `STOP_GRACE_SECONDS` for a slow thread)."""
        self._closing = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_GRACE_SECONDS), self._lock:
                pass
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def observe(self, change: JobChange) -> None:
        """A `JobStore` observer: notes parks and their ends (never blocks)."""
        job = change.job
        if job.origin is None:
            return
        if asking(job):
            if job.id in self._watched and change.before_status == job.status:
                return  # an update while parked (the claim of its question, say)
            if change.before_status != job.status:
                self._parked_at[job.id] = job.updated_at  # the park's own write
            self._watched.add(job.id)
        elif job.id not in self._watched and job.origin.asked_at is None:
            return  # nothing to ask, nothing to forget
        self._dirty.add(job.id)
        self._wakeup.set()

    # --- the loop -------------------------------------------------------------------------

    async def _loop(self) -> None:
        next_poll = time.monotonic()
        while True:
            due = time.monotonic() >= next_poll
            if due:
                next_poll = time.monotonic() + self.env.config.triggers.poll_interval_seconds
            try:
                if due:
                    await self.poll_once()
                else:
                    await self.tend_dirty()
            except Exception:  # the store failing, say: the next cycle tries again
                logger.exception("thread replies cycle failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), max(0.0, next_poll - time.monotonic()))
            self._wakeup.clear()

    async def tend_dirty(self) -> None:
        """Ask the questions of new parks and forget ended ones (no thread is read)."""
        async with self._lock:
            dirty, self._dirty = self._dirty, set()
            for job_id in sorted(dirty):
                await self._tend_safely(job_id, read=False)

    async def poll_once(self) -> None:
        """One cycle: every watched job's question asked and its thread read."""
        async with self._lock:
            dirty, self._dirty = self._dirty, set()
            for job_id in sorted(self._watched | dirty):
                await self._tend_safely(job_id, read=True)

    async def _tend_safely(self, job_id: str, *, read: bool) -> None:
        if self._closing:
            return
        try:
            await self._tend(job_id, read=read)
        except Exception:  # one job's failure must not keep the others' threads unread
            logger.exception("thread replies of %s failed", job_id)

    async def _tend(self, job_id: str, *, read: bool) -> None:
        job = await self.env.store.find(job_id)
        if job is None or job.origin is None or not asking(job):
            self._forget(job_id)
            if job is not None and job.origin is not None and job.origin.asked_at is not None:
                await self._clear_asked(job_id)
            return
        self._watched.add(job_id)
        rule = self._rule(job.origin)
        if rule is None or not rule.reply:
            self._forget(job_id)  # left alone: no rule says to reply there
            return
        try:
            thread = self._thread(job.origin)
            if not self._asked(job):
                await self._ask(job, thread)
            elif read and not self.webhooks(job.origin.plugin_id):
                await self._read(job, rule, thread)
        except (_NoThread, PluginError) as exc:
            await self._problem(job, str(exc))

    def _forget(self, job_id: str) -> None:
        self._watched.discard(job_id)
        self._parked_at.pop(job_id, None)
        self._problems.pop(job_id, None)

    def _asked(self, job: Job) -> bool:
        """Whether this park's question is posted (or claimed by whoever posts it)."""
        assert job.origin is not None
        asked = job.origin.asked_at
        parked = self._parked_at.get(job.id)
        return asked is not None and (parked is None or asked >= parked)

    def _rule(self, origin: JobOrigin) -> TriggerRule | None:
        return origin_rule(self.env.config, origin)

    def _thread(self, origin: JobOrigin) -> _Thread:
        plugins = self.env.plugins
        if origin.kind == "issue":
            tracker = plugins.get("tracker", origin.plugin_id)
            if tracker is None:
                raise _NoThread(f"tracker {origin.plugin_id!r} is not installed")
            if not isinstance(tracker, _ListsComments):
                raise _NoThread(f"tracker {origin.plugin_id!r} cannot list comments")
            return _IssueThread(tracker, origin.key)
        scm = plugins.get("scm", origin.plugin_id)
        if scm is None:
            raise _NoThread(f"source control {origin.plugin_id!r} is not installed")
        repo, _, number = origin.key.rpartition("#")
        if not repo or not number.isdigit():
            raise _NoThread(f"{origin.key!r} does not name a pull request (repo#number)")
        return _PrThread(scm, repo, int(number))

    async def _problem(self, job: Job, text: str) -> None:
        assert job.origin is not None
        if self._problems.get(job.id) == text:
            logger.warning("thread of %s on %s: %s", job.id, job.origin.key, text)
            return
        self._problems[job.id] = text
        await self.env.store.log(
            job.id, f"[thread] Cannot reach {job.origin.key} (retrying every poll): {text}"
        )

    # --- asking ---------------------------------------------------------------------------

    async def _ask(self, job: Job, thread: _Thread) -> None:
        claim = iso_now()

        def claim_park(j: Job) -> bool:
            if j.origin is None or not asking(j) or self._asked(j):
                return False
            j.origin.asked_at = claim
            return True

        job, claimed = await self.env.store.update(job.id, claim_park)
        if not claimed:
            return  # asked already (by another runner, or before a restart)
        assert job.origin is not None
        try:
            comment_id = await thread.post(question_comment(job, run_link(self.env.config, job.id)))
        except PluginError:

            def release(j: Job) -> bool:
                if j.origin is None or j.origin.asked_at != claim:
                    return False
                j.origin.asked_at = None
                return True

            await self.env.store.update(job.id, release)
            raise

        def record(j: Job) -> bool:
            if j.origin is None or j.origin.asked_at != claim:
                return False
            j.origin.seen_comment_id = comment_id
            return True

        self._problems.pop(job.id, None)
        await self.env.store.update(
            job.id, record, note=f"[thread] Question posted on {job.origin.key} ({comment_id})"
        )

    async def _clear_asked(self, job_id: str) -> None:
        def clear(j: Job) -> bool:
            if j.origin is None or j.origin.asked_at is None or asking(j):
                return False
            j.origin.asked_at = None
            return True

        with contextlib.suppress(JobNotFound):
            await self.env.store.update(job_id, clear)

    # --- answers --------------------------------------------------------------------------

    def _judge(self, job: Job, rule: TriggerRule, comment: ThreadComment) -> str | None:
        """Why `comment` is not an answer to the job's question; None if it is."""
        assert job.origin is not None
        if is_coro_comment(comment.body):
            return ""  # Coro's own: skipped without a word
        if not comment.body.strip():
            return f"Ignored comment {comment.id} by {comment.author}: it is empty"
        if len(comment.body) > MAX_ANSWER_CHARS:
            return (
                f"Ignored comment {comment.id} by {comment.author}: longer than "
                f"{MAX_ANSWER_CHARS} characters"
            )
        if not permitted(rule, job.origin, comment.author, comment.author_association):
            return (
                f"Ignored comment {comment.id} by {comment.author} on {job.origin.key}: "
                "not permitted to answer this job"
            )
        return None

    async def _read(self, job: Job, rule: TriggerRule, thread: _Thread) -> None:
        assert job.origin is not None
        new = comments_after(await thread.comments(), job.origin.seen_comment_id)
        self._problems.pop(job.id, None)
        if new:
            await self._consider(job, rule, new)

    async def _consider(
        self, job: Job, rule: TriggerRule, comments: Sequence[ThreadComment]
    ) -> Verdict:
        """Judge `comments` (new ones, oldest first) and act on the first answer."""
        assert job.origin is not None
        judged: list[_Judged] = []
        for comment in comments:
            judged.append(_Judged(comment, self._judge(job, rule, comment)))
            if judged[-1].note is None:
                break
        answer = judged[-1].comment if judged[-1].note is None else None
        seen, last = job.origin.seen_comment_id, judged[-1].comment.id
        key = job.origin.key
        stamp = iso_now()
        lines = [f"{stamp} [thread] {j.note}" for j in judged if j.note]
        if answer is not None:
            lines.append(f"{stamp} [thread] Answer from {answer.author} on {key} ({answer.id})")

        def move_on(j: Job) -> bool:
            if j.origin is None or not asking(j) or j.origin.seen_comment_id != seen:
                return False
            j.origin.seen_comment_id = last
            return True

        job, moved = await self.env.store.update(job.id, move_on, log=lines)
        if not moved or answer is None:
            return "ignored"
        return await self._deliver(job, answer)

    async def _deliver(self, job: Job, answer: ThreadComment) -> Verdict:
        text = _unquoted(answer.body) or answer.body.strip()
        try:
            if job.awaiting_next_phase is not None and _APPROVAL.match(text):
                await self.jobs.resume(job.id)
                return "approved"
            await self.jobs.message(job.id, text)
        except (Conflict, JobNotFound) as exc:
            logger.info("answer to %s not delivered: %s", job.id, exc)
            return "ignored"
        return "resumed"

    # --- forwarded comments (hybrid mode) ---------------------------------------------------

    async def receive_comment(
        self,
        *,
        plugin_id: str,
        thread: str,
        comment_id: str,
        author: str,
        body: str,
        author_association: str | None = None,
    ) -> Verdict:
        """A comment on `thread` (an origin key: `owner/name#12`, `PROJ-12`) of plugin
        `plugin_id`, forwarded by the team cloud from a webhook: the answer of the jobs
        asking there if it is one, under the same rules as a polled comment.
        `no-question`: no job of this runner has a question posted in that thread."""
        for name, value in (("pluginId", plugin_id), ("thread", thread), ("commentId", comment_id)):
            if not isinstance(value, str) or not value.strip() or len(value) > 500:
                raise ValueError(f"{name} must be 1-500 characters")
        if not isinstance(author, str) or not isinstance(body, str):
            raise ValueError("author and body must be text")
        comment = ThreadComment(comment_id.strip(), author, body, author_association)
        outcomes: list[Verdict] = []
        async with self._lock:
            for job_id in sorted(self._watched):
                job = await self.env.store.find(job_id)
                origin = job.origin if job is not None else None
                if job is None or origin is None or not asking(job) or not self._asked(job):
                    continue
                if origin.plugin_id != plugin_id or origin.key.casefold() != thread.casefold():
                    continue
                rule = self._rule(origin)
                if rule is None or not rule.reply:
                    continue
                if not _is_after(comment.id, origin.seen_comment_id):
                    outcomes.append("ignored")  # polled already, or before the question
                    continue
                outcomes.append(await self._consider(job, rule, [comment]))
        return min(outcomes, key=_VERDICTS.index, default="no-question")


#: verdicts of a forwarded comment, the one reported first when several jobs ask there
_VERDICTS: tuple[Verdict, ...] = ("approved", "resumed", "ignored", "no-question")


def origin_rule(config: CoroConfig, origin: JobOrigin) -> TriggerRule | None:
    """The rule that started a job: the team rule it carries (a job the team cloud
    started), else the config's rule of its `ruleId`; None when there is neither."""
    if origin.rule is None:
        return next((r for r in config.triggers.rules if r.id == origin.rule_id), None)
    try:
        return TriggerRule.model_validate(origin.rule)
    except ValidationError:
        logger.warning("the team rule %s of a job cannot be read", origin.rule_id)
        return None


def permitted(rule: TriggerRule, origin: JobOrigin, author: str, association: str | None) -> bool:
    """Whether `author` may answer the job: the rule's `permittedUsers` if it names any,
    else the origin's author and the repository's maintainers (where the provider says)."""
    who = author.strip().lstrip("@").casefold()
    if not who:
        return False
    if rule.permitted_users is not None:
        return who in {user.strip().lstrip("@").casefold() for user in rule.permitted_users}
    if origin.author and who == origin.author.strip().lstrip("@").casefold():
        return True
    return (association or "").upper() in MAINTAINERS
