"""Starting the job a trigger event asks for, once, and saying so in its thread.

`TriggerLauncher.launch(rule, event, feed)` is what a matched event leads to, whoever
found it (the local poller; a hybrid runner handed an event by its cloud):

1. The job's id comes from the rule and the event (`rules.trigger_job_id`): a job of that
   id already there means the event was handled, and nothing more happens (no request).
2. The feed completes the event (`feed_details`: a pull request's branches, a comment's
   issue), the thread's newest comment is read when the event is not a comment (the
   thread's answers are the comments after it: `origin.seenCommentId`), and the job is
   created through `JobService.create_new`, exactly as `POST /jobs` creates one. When two
   deliveries of one event race — two cycles, two runners on one database, a poll and a
   webhook — the store refuses the second id (`JobExists`) and only the first goes on.
3. Only the call that created the job replies (rule `reply`, default on): one comment on
   the issue (its tracker) or the pull request (its SCM plugin, which owns PR threads),
   starting with `coro_comment_prefix` — so it never triggers a rule nor counts as an
   answer — with a link to the run; its id becomes `origin.seenCommentId`. A reply that
   fails is logged and not retried: the job runs either way.

`reply_once` is that reply on its own, claimed on the job (`origin.repliedAt`): a hybrid
runner posts it for a job its team cloud started from a webhook (`event:dispatch`),
after `complete_pull_request` has read the branches a webhook did not carry.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from coro.config import CoroConfig
from coro.config.triggers import TriggerRule
from coro.domain.errors import PluginError
from coro.domain.models import Job, JobOrigin, iso_now
from coro.engine.service import JobService, NewJob, UpstreamFailed
from coro.engine.thread_replies import coro_comment_prefix, run_link
from coro.engine.triggers.events import TriggerEvent, TriggerFeed
from coro.engine.triggers.rules import job_for, trigger_job_id
from coro.plugins.registry import PluginResolutionError, PluginSet
from coro.plugins.scm.base import ScmPlugin
from coro.state.store import JobStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Launched:
    """What `launch` did: the job, whether this call created it, and Coro's reply."""

    job: Job
    created: bool
    reply_id: str | None = None


def reply_text(job_id: str, link: str, *, pull_request: bool) -> str:
    """The comment saying a job started (it starts as every comment of Coro's does)."""
    what = "pull request" if pull_request else "issue"
    return f"{coro_comment_prefix(job_id)} started a run for this {what}: {link}"


class TriggerLauncher:
    def __init__(self, jobs: JobService, config: CoroConfig, plugins: PluginSet) -> None:
        self.jobs = jobs
        self.config = config
        self.plugins = plugins

    def reconfigure(self, config: CoroConfig, plugins: PluginSet) -> None:
        self.config = config
        self.plugins = plugins

    async def launch(self, rule: TriggerRule, event: TriggerEvent, feed: TriggerFeed) -> Launched:
        """Start `rule`'s job for `event` unless it exists (see the module docstring).
        Raises the engine's errors (`InvalidRequest`, `PluginRequired`, `UpstreamFailed`)
        when the job cannot be created, and `PluginError` when the feed fails."""
        store = self.jobs.store
        existing = await store.find(trigger_job_id(rule.id, event))
        if existing is not None:
            return Launched(existing, created=False)
        event = await feed.feed_details(event)
        pr_plugin = self._pr_plugin(rule, event)
        seen = None if event.comment_id else await self._newest_comment(event, pr_plugin)
        job, created = await self.jobs.create_new(
            job_for(
                rule, event, pr_plugin=pr_plugin.id if pr_plugin else None, seen_comment_id=seen
            )
        )
        if not created:
            return Launched(job, created=False)
        who = f" by {event.author}" if event.author else ""
        where = f" {event.url}" if event.url else ""
        await store.log(
            job.id,
            f"[trigger] Started by rule {rule.id}: {event.kind} on {event.key}{who}{where}",
        )
        reply_id = await reply_once(store, self.config, self.plugins, job, rule)
        return Launched(job, created=True, reply_id=reply_id)

    def _pr_plugin(self, rule: TriggerRule, event: TriggerEvent) -> ScmPlugin | None:
        """The SCM plugin of a pull request's thread: the rule's `params.gitProvider`,
        else the default one, unless that is only the stand-by (`local`)."""
        if not event.pull_request:
            return None
        named = rule.params.get("gitProvider")
        explicit = named if isinstance(named, str) and named else None
        try:
            plugin: ScmPlugin = self.plugins.resolve("scm", explicit)
        except PluginResolutionError as exc:
            logger.warning("trigger %s: no source control for %s: %s", rule.id, event.key, exc)
            return None
        if explicit is None and plugin.id in self.plugins.scm.fallbacks:
            logger.warning(
                "trigger %s: %s is a pull request, but no forge is configured for it "
                "(plugins.installed, or params.gitProvider of the rule)",
                rule.id,
                event.key,
            )
            return None
        return plugin

    async def _newest_comment(self, event: TriggerEvent, scm: ScmPlugin | None) -> str | None:
        """The id of the thread's newest comment (None when there is none, or it cannot
        be read: the reply's id then becomes the first one seen)."""
        try:
            if event.pull_request:
                if scm is None or event.number is None:
                    return None
                comments = (await scm.pr_status(event.scope, event.number)).comments
                return comments[-1].id if comments else None
            tracker = self.plugins.get("tracker", event.plugin_id)
            lister = getattr(tracker, "list_comments", None)
            if lister is None:
                return None
            found = await lister(event.key)
            return str(found[-1].id) if found else None
        except PluginError as exc:
            logger.warning("reading the comments of %s failed: %s", event.key, exc)
            return None


async def reply_once(
    store: JobStore, config: CoroConfig, plugins: PluginSet, job: Job, rule: TriggerRule
) -> str | None:
    """Say in the job's origin thread that it started, with a link to the run, once: the
    reply is claimed on the job (`origin.repliedAt`, a conditional update) before it is
    posted, so neither a second delivery, a redelivered dispatch nor another runner on
    the same database posts it twice. Nothing when the rule says `reply: false`. The
    comment's id (None if it was not posted) becomes `origin.seenCommentId`. A reply
    that fails is logged and not retried: the job runs either way."""
    if job.origin is None or not rule.reply:
        return None
    claim = iso_now()

    def claim_reply(j: Job) -> bool:
        if j.origin is None or j.origin.replied_at is not None:
            return False
        j.origin.replied_at = claim
        return True

    job, claimed = await store.update(job.id, claim_reply)
    origin = job.origin
    if not claimed or origin is None:
        return None
    body = reply_text(job.id, run_link(config, job.id), pull_request=origin.kind == "pull_request")
    try:
        comment_id = await _post(plugins, origin, body)
    except PluginError as exc:
        logger.warning("job %s: replying on %s failed: %s", job.id, origin.key, exc)
        await store.log(job.id, f"[trigger] Could not reply on {origin.key}: {exc}")
        return None
    if comment_id is None:
        return None
    before = origin.seen_comment_id

    def seen(j: Job) -> bool:
        # unless the thread moved on meanwhile (a question posted after the reply)
        if j.origin is None or j.origin.seen_comment_id != before:
            return False
        j.origin.seen_comment_id = comment_id
        return True

    await store.update(job.id, seen)
    await store.log(job.id, f"[trigger] Replied on {origin.key} with the run's link ({comment_id})")
    return comment_id


async def _post(plugins: PluginSet, origin: JobOrigin, body: str) -> str | None:
    """Post `body` in the origin's thread: a pull request's through its SCM plugin, an
    issue's through its tracker; None when that plugin is not there."""
    if origin.kind == "pull_request":
        scm = plugins.get("scm", origin.plugin_id)
        repo, _, number = origin.key.rpartition("#")
        if scm is None or not repo or not number.isdigit():
            return None
        return (await scm.post_comment(repo, int(number), body)).id
    tracker = plugins.get("tracker", origin.plugin_id)
    if tracker is None:
        return None
    return (await tracker.comment(origin.key, body)).id


async def complete_pull_request(request: NewJob, plugins: PluginSet) -> None:
    """Give a job started from a pull request's conversation the branches its event did
    not carry (a GitHub webhook's `issue_comment` names the pull request only), read
    through the SCM plugin of its thread. `UpstreamFailed` when they cannot be read."""
    origin = request.origin
    if origin is None or origin.kind != "pull_request" or request.params.get("branch"):
        return
    repo, _, number = origin.key.rpartition("#")
    scm = plugins.get("scm", origin.plugin_id)
    if scm is None or not repo or not number.isdigit():
        raise UpstreamFailed(f"{origin.key}: no source control {origin.plugin_id!r} to read it")
    try:
        pull = (await scm.pr_status(repo, int(number))).pull_request
    except PluginError as exc:
        raise UpstreamFailed(f"reading pull request {origin.key} failed: {exc}") from exc
    request.params["branch"] = pull.source_branch
    request.params["baseBranch"] = pull.target_branch
    described = request.params.get("pullRequest")
    if isinstance(described, dict):
        described["headBranch"] = described.get("headBranch") or pull.source_branch
        described["baseBranch"] = described.get("baseBranch") or pull.target_branch
