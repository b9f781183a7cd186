"""Webhook deliveries the cloud forwarded (`event:pluginWebhook`) → inbound events.

`events_from_webhook` decodes the delivery, has the plugin it names parse it
(`coro.plugins.webhooks.WebhookParser`), and makes the events the PR poller would have
made for the same change, for the job the cloud named (`jobId`) or, when it named
none, for every unfinished job with that pull request among its PR mappings. The
caller hands them to the dispatcher (`Dispatcher.deliver`), so a parked job wakes as
it would from a poll.

What a delivery reports is recorded as seen on the job's PR mapping (state, approval
count, comment ids), as a poll records it, so a poller running beside the webhooks
does not announce the same change again; and a change already seen (a comment the
agent posted itself, a merge a poll already reported) is not announced twice.

The cloud verified the delivery's signature; the runner trusts it and does not check
again. A delivery it cannot use (unknown plugin, no parser, a body that is not base64,
an event Coro does not act on, no job) gives no events.

A delivery the cloud routed by the thread a job came from (`Job.origin`) carries the
comment it read there (`frame.comment`): `answer_from_webhook` hands it to the thread
replies (`ThreadReplies.receive_comment`), which take it as they take a polled one.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Sequence
from typing import Any

from coro.domain.cloud_protocol import EventPluginWebhook
from coro.domain.models import TERMINAL, ExternalRef, Job, PrMapping, PrSeen
from coro.engine.events import InboundEvent
from coro.engine.thread_replies import ThreadReplies, Verdict
from coro.plugins.registry import PluginSet
from coro.plugins.webhooks import (
    APPROVED,
    UNAPPROVED,
    WebhookEvent,
    WebhookParser,
    repo_names_match,
)
from coro.state.backend import JobQuery
from coro.state.store import JobStore

logger = logging.getLogger(__name__)

#: unfinished jobs looked through for a delivery that names no job
SCAN_LIMIT = 100_000
_STATE_WORDS = {"OPEN": "open", "MERGED": "merged", "DECLINED": "declined"}


async def events_from_webhook(
    plugins: PluginSet, frame: EventPluginWebhook, store: JobStore
) -> list[InboundEvent]:
    """The inbound events of one forwarded delivery ([] when it wakes nothing)."""
    changes = _parse(plugins, frame)
    if not changes:
        return []
    if frame.job_id is not None:
        job = await store.find(frame.job_id)
        jobs = [job] if job is not None and job.status not in TERMINAL else []
    else:
        query = JobQuery(exclude_statuses=sorted(TERMINAL), limit=SCAN_LIMIT)
        candidates, _ = await store.backend.list_jobs(query)
        jobs = [job for job in candidates if any(_mapping(job, c) for c in changes)]
    events: list[InboundEvent] = []
    for job in jobs:
        events.extend(await _for_job(store, job, changes, frame.received_at))
    if not events:
        logger.info(
            "webhook %s of %s: nothing to wake (%d change(s), job %s)",
            frame.delivery_id or "-",
            frame.plugin_id,
            len(changes),
            frame.job_id or "not named",
        )
    return events


async def answer_from_webhook(replies: ThreadReplies, frame: EventPluginWebhook) -> Verdict | None:
    """The forwarded comment of the frame as an answer in its thread (None: the frame
    carries no comment; `no-question`: no job of this runner asks there)."""
    comment = frame.comment
    if comment is None:
        return None
    try:
        return await replies.receive_comment(
            plugin_id=comment.plugin_id,
            thread=comment.thread,
            comment_id=comment.comment_id,
            author=comment.author,
            body=comment.body,
            author_association=comment.author_association,
        )
    except ValueError as exc:
        logger.warning("webhook %s: the comment cannot be read: %s", frame.delivery_id or "-", exc)
        return "ignored"


def _parse(plugins: PluginSet, frame: EventPluginWebhook) -> list[WebhookEvent]:
    plugin = plugins.get("scm", frame.plugin_id) or plugins.get("tracker", frame.plugin_id)
    if not isinstance(plugin, WebhookParser):
        logger.warning(
            "webhook %s: plugin %s is not loaded here or takes no webhooks",
            frame.delivery_id or "-",
            frame.plugin_id,
        )
        return []
    try:
        body = base64.b64decode(frame.raw_body_base64, validate=True)
    except (binascii.Error, ValueError):
        logger.warning("webhook %s: the body is not base64", frame.delivery_id or "-")
        return []
    headers = {name.lower(): value for name, value in frame.headers.items()}
    try:
        changes = plugin.parse_webhook(headers, body)
    except Exception:  # a drop-in's parser failing must not take the runner's loop down
        logger.exception("webhook %s: the %s parser failed", frame.delivery_id or "-", plugin)
        return []
    return [c for c in changes if c.ref.kind == "pull_request" and c.ref.external_id.isdigit()]


def _mapping(job: Job, change: WebhookEvent) -> PrMapping | None:
    """The job's mapping of the change's pull request (same plugin and repository)."""
    for mapping in job.pr_mappings:
        if mapping.pr_id != change.pr_id:
            continue
        plugin_id = mapping.plugin_id or job.scm_plugin_id(None, mapping.repo_slug)
        if plugin_id not in (None, change.ref.plugin_id):
            continue
        if repo_names_match(mapping.repo_slug, change.ref.repo_key):
            return mapping
    return None


async def _for_job(
    store: JobStore, job: Job, changes: Sequence[WebhookEvent], received_at: str
) -> list[InboundEvent]:
    events: list[InboundEvent] = []
    news: list[WebhookEvent] = []
    seen_now: dict[int, PrSeen] = {}  # what this delivery has changed so far, per PR
    for change in changes:
        mapping = _mapping(job, change)
        if mapping is None:
            events.append(_event(job.id, change, None, None, received_at))
            continue
        seen = seen_now.get(mapping.pr_id, mapping.seen)
        if _already_seen(mapping, seen, change):
            continue
        events.append(_event(job.id, change, mapping, seen, received_at))
        news.append(change)
        if seen is not None:
            seen_now[mapping.pr_id] = _after(seen, change)
    if news:
        await _remember(store, job.id, news)
    return events


def _already_seen(mapping: PrMapping, seen: PrSeen | None, change: WebhookEvent) -> bool:
    if change.comment_id is not None:
        return seen is not None and change.comment_id in seen.comment_ids
    if change.state in ("MERGED", "DECLINED") and change.payload.get("state") == change.state:
        # a merge or decline: known once stamped on the mapping or seen by a poll
        word = _STATE_WORDS[change.state]
        return not mapping.is_open or (seen is not None and seen.state == word)
    if change.payload.get("state") == "OPEN":  # reopened
        return seen is not None and seen.state == "open"
    return False


def _approvals(seen: PrSeen | None, change: WebhookEvent) -> int | None:
    if change.event_key not in (APPROVED, UNAPPROVED):
        return None
    if change.approval_count is not None:
        return change.approval_count
    before = seen.approval_count if seen is not None else 0
    return before + 1 if change.event_key == APPROVED else max(0, before - 1)


def _after(seen: PrSeen, change: WebhookEvent) -> PrSeen:
    """`seen` once this change is known."""
    update: dict[str, Any] = {}
    if change.comment_id is not None:
        update["comment_ids"] = [*seen.comment_ids, change.comment_id]
    elif change.payload.get("state") in _STATE_WORDS:
        update["state"] = _STATE_WORDS[str(change.payload["state"])]
    count = _approvals(seen, change)
    if count is not None:
        update["approval_count"] = count
    return seen.model_copy(update=update)


async def _remember(store: JobStore, job_id: str, changes: Sequence[WebhookEvent]) -> None:
    def record(job: Job) -> bool:
        changed = False
        for change in changes:
            mapping = _mapping(job, change)
            if mapping is None or mapping.seen is None:
                continue  # a PR never polled keeps its cold start
            after = _after(mapping.seen, change)
            if after != mapping.seen:
                mapping.seen = after
                changed = True
        return changed

    await store.update(job_id, record)


def _event(
    job_id: str,
    change: WebhookEvent,
    mapping: PrMapping | None,
    seen: PrSeen | None,
    received_at: str,
) -> InboundEvent:
    """The event as the poller makes it (its ref names the repository as the job does)."""
    pr_id = change.pr_id
    ref = change.ref
    if mapping is not None:
        ref = ExternalRef(
            kind="pull_request",
            plugin_id=change.ref.plugin_id,
            repo_key=mapping.repo_slug,
            external_id=str(pr_id),
            url=mapping.url,
        )
    payload: dict[str, Any] = dict(change.payload)
    count = _approvals(seen, change)
    if count is not None:
        payload["approvalCount"] = count
    payload["prId"] = pr_id
    payload["pullrequest"] = {"id": pr_id, "state": change.state}
    return InboundEvent(
        job_id=job_id,
        event_key=change.event_key,
        payload=payload,
        plugin_id=change.ref.plugin_id,
        ref=ref,
        received_at=received_at,
    )
