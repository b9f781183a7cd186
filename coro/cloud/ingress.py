"""Webhook ingress (`POST /webhook/{teamId}/{pluginId}`): verify, de-duplicate, route.

1. The plugin: a built-in whose manifest declares how its webhooks are signed
   (`webhook.algorithm` `hmac-sha256` / `hmac-sha1`, `header`, `format`). Unknown
   plugins, plugins without webhooks and unsigned ones (`algorithm: none`) are 404: a
   webhook that changes a job must be signed.
2. The team's secret for the plugin (`webhook_secrets`); none (or no such team): 404.
3. The signature: the HMAC of the exact request bytes (whatever their content type),
   keyed by the secret, rendered by `format` (`sha256=<hex>`, `sha1=<hex>`, `<hex>`),
   compared in constant time with the header. Missing or wrong: 401, nothing stored.
4. De-duplication by the provider's delivery id (the manifest's `deliveryIdHeader`,
   else `X-GitHub-Delivery` / `X-Request-UUID`) in `webhook_deliveries`: a delivery
   seen before is answered 200 `{duplicate: true}` and has no second effect. Rows
   older than `DELIVERY_RETENTION_DAYS` are purged as new deliveries come.
5. The job: the plugin's parser (`parse_webhook`, beside its factory) names the pull
   request; the mirror's refs name the job. The delivery goes to the job's runner as an
   `event:pluginWebhook` command, through the durable queue (queued if that runner is
   offline), where `coro.engine.webhooks` turns it into events. No job: 202
   `{routed: false}` and nothing is queued.
6. Triggers: the trigger parsers of the delivery (the manifest's `webhook.triggerParser`
   of the plugin, and of every plugin whose manifest says it `readsDeliveriesOf` this
   one: GitHub's issue events arrive on the `github` webhook, for `github-issues`
   rules) give `TriggerEvent`s with the event keys of the plugins' own feeds. Each is
   matched against the team's rules and starts at most one team job per rule
   (`coro.cloud.triggers`: named after rule and event, so a redelivery starts nothing);
   a new comment in the thread a team job came from (its `thread` ref), unless Coro
   wrote it, goes to that job's runner with the comment read (`frame.comment`), for the
   answer to its question. The answer says what was done: `routed`/`jobIds` (commands
   queued), `triggered` (the ids of the jobs started).

Logs name the team, plugin, delivery id and job, never the secret, signature or body.
"""

from __future__ import annotations

import base64
import hmac
import importlib
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import func, select, tuple_
from sqlalchemy.dialects.postgresql import insert

from coro.cloud.commands import Commands
from coro.cloud.db import Database
from coro.cloud.errors import CloudError, NotFound
from coro.cloud.mirror import Mirror
from coro.cloud.schema import team_job_refs, webhook_deliveries
from coro.cloud.team_jobs import TeamJobs
from coro.cloud.triggers import TeamTriggers
from coro.cloud.webhook_secrets import webhook_secret
from coro.domain.cloud_protocol import EventPluginWebhook, WebhookComment
from coro.domain.models import ExternalRef, iso_now
from coro.engine.thread_replies import is_coro_comment
from coro.engine.triggers import TriggerEvent
from coro.extensions import BUILTIN_PLUGINS
from coro.plugins.dropins import builtin_entry
from coro.plugins.manifest import WebhookSpec, resolve_entry
from coro.plugins.webhooks import ParseWebhook, WebhookEvent, repo_names_match

logger = logging.getLogger(__name__)

DELIVERY_RETENTION_DAYS = 7
#: expired delivery rows one purge removes at most (the next delivery takes the rest)
PURGE_BATCH = 1000
MAX_DELIVERY_ID = 200
#: the delivery id headers of the providers whose manifest names none
DELIVERY_ID_HEADERS = ("x-github-delivery", "x-request-uuid")
#: request headers not forwarded to the runner (credentials of other schemes)
_DROPPED_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
_DIGESTS = {"hmac-sha256": "sha256", "hmac-sha1": "sha1"}
NOT_CONFIGURED = "Webhook not configured for this team/plugin"

#: A trigger parser: lower-cased header names, the exact body.
ParseTriggers = Callable[[Mapping[str, str], bytes], list[TriggerEvent]]


class BadSignature(CloudError):
    """401 without the `WWW-Authenticate: Bearer` of a missing sign-in: a provider
    cannot sign in, only sign."""

    status = 401


@dataclass(frozen=True)
class WebhookPlugin:
    plugin_id: str
    spec: WebhookSpec
    parse: ParseWebhook | None
    #: what reads its deliveries' trigger events (the manifest's `triggerParser`)
    parse_triggers: ParseTriggers | None = None
    #: the plugins whose deliveries its trigger parser reads too (`readsDeliveriesOf`)
    reads: tuple[str, ...] = ()

    @property
    def delivery_id_headers(self) -> tuple[str, ...]:
        declared = (self.spec.model_extra or {}).get("deliveryIdHeader")
        if isinstance(declared, str) and declared:
            return (declared.lower(),)
        return DELIVERY_ID_HEADERS


def builtin_webhook_plugins() -> dict[str, WebhookPlugin]:
    """The built-in source-control and tracker plugins that take signed webhooks."""
    found: dict[str, WebhookPlugin] = {}
    for builtin in BUILTIN_PLUGINS:
        if builtin.kind not in ("scm", "tracker"):
            continue
        manifest = builtin_entry(builtin).manifest
        if manifest is None or manifest.webhook is None:
            continue
        if manifest.webhook.algorithm not in _DIGESTS:
            continue  # unsigned deliveries cannot be told from a stranger's
        module = importlib.import_module(builtin.entry.partition(":")[0])
        parse = getattr(module, "parse_webhook", None)
        extra = manifest.webhook.model_extra or {}
        entry = extra.get("triggerParser")
        triggers = resolve_entry(entry) if isinstance(entry, str) else None
        reads = extra.get("readsDeliveriesOf")
        found[builtin.id] = WebhookPlugin(
            builtin.id,
            manifest.webhook,
            parse if callable(parse) else None,
            triggers if callable(triggers) else None,
            tuple(r for r in reads if isinstance(r, str)) if isinstance(reads, list) else (),
        )
    return found


def expected_signature(spec: WebhookSpec, secret: str, body: bytes) -> str | None:
    """The header value a delivery of `body` signed with `secret` carries (None for a
    scheme that is not an HMAC rendered as hex)."""
    digest = _DIGESTS.get(spec.algorithm)
    if digest is None or spec.format.count("<hex>") != 1:
        return None
    signed = hmac.new(secret.encode("utf-8"), body, digest).hexdigest()
    return spec.format.replace("<hex>", signed)


def signature_valid(
    spec: WebhookSpec, secret: str, body: bytes, headers: Mapping[str, str]
) -> bool:
    """Whether the delivery's signature header is the HMAC of its exact bytes."""
    expected = expected_signature(spec, secret, body)
    received = headers.get(spec.header.lower(), "").strip()
    if expected is None or not received:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), received.encode("utf-8"))


@dataclass(frozen=True)
class Receipt:
    """What the ingress did with a delivery (the route's answer)."""

    duplicate: bool = False
    job_ids: list[str] = field(default_factory=list)
    command_ids: list[int] = field(default_factory=list)
    #: the jobs the delivery's trigger events started
    triggered: list[str] = field(default_factory=list)

    @property
    def routed(self) -> bool:
        return bool(self.job_ids)


class Ingress:
    def __init__(
        self,
        db: Database,
        mirror: Mirror,
        commands: Commands,
        plugins: Mapping[str, WebhookPlugin] | None = None,
        *,
        team_jobs: TeamJobs | None = None,
    ) -> None:
        self.db = db
        self.mirror = mirror
        self.commands = commands
        self.plugins = dict(plugins) if plugins is not None else builtin_webhook_plugins()
        #: where trigger events start jobs (None: they start none)
        self.team_jobs = team_jobs
        self.triggers = TeamTriggers(db)

    async def receive(
        self, team_id: str, plugin_id: str, headers: Mapping[str, str], body: bytes
    ) -> Receipt:
        """Verify, de-duplicate and route one delivery (`headers`: lower-cased names,
        first values). Raises `NotFound` / `BadSignature`."""
        plugin = self.plugins.get(plugin_id)
        if plugin is None:
            raise NotFound(NOT_CONFIGURED)
        secret = await webhook_secret(self.db, team_id, plugin_id)
        if secret is None:
            raise NotFound(NOT_CONFIGURED)
        if not signature_valid(plugin.spec, secret, body, headers):
            logger.warning("webhook %s for team %s: bad or missing signature", plugin_id, team_id)
            raise BadSignature("Invalid signature")
        delivery_id = _delivery_id(plugin, headers)
        if delivery_id is not None and not await self._first_delivery(
            team_id, plugin_id, delivery_id
        ):
            logger.info(
                "webhook %s for team %s: delivery %s again, ignored",
                plugin_id,
                team_id,
                delivery_id,
            )
            return Receipt(duplicate=True)
        try:
            return await self._route(team_id, plugin, headers, body, delivery_id)
        except BaseException:
            # nothing was queued: let the provider's retry of this delivery through
            if delivery_id is not None:
                await self._forget_delivery(team_id, plugin_id, delivery_id)
            raise

    async def _route(
        self,
        team_id: str,
        plugin: WebhookPlugin,
        headers: Mapping[str, str],
        body: bytes,
        delivery_id: str | None,
    ) -> Receipt:
        job_ids: list[str] = []
        for event in _parse(plugin, headers, body):
            job_id = await self._job_for(team_id, event.ref)
            if job_id is not None and job_id not in job_ids:
                job_ids.append(job_id)
        events = self._trigger_events(plugin, headers, body)
        # the threads' jobs before the jobs these events start (which take the threads)
        comments = await self._thread_comments(team_id, events)
        job_ids += [job_id for job_id in comments if job_id not in job_ids]
        triggered: list[str] = []
        if self.team_jobs is not None and events:
            triggered = await self.triggers.start(self.team_jobs, team_id, events)
        if not job_ids:
            logger.info(
                "webhook %s for team %s: delivery %s concerns no known job (%d started)",
                plugin.plugin_id,
                team_id,
                delivery_id or "-",
                len(triggered),
            )
            return Receipt(triggered=triggered)
        forwarded = {k: v for k, v in headers.items() if k not in _DROPPED_HEADERS}
        received_at = iso_now()
        command_ids = []
        for job_id in job_ids:
            frame = EventPluginWebhook(
                message_id=f"webhook-{uuid.uuid4().hex}",
                plugin_id=plugin.plugin_id,
                job_id=job_id,
                delivery_id=delivery_id,
                headers=forwarded,
                raw_body_base64=base64.b64encode(body).decode("ascii"),
                received_at=received_at,
                comment=comments.get(job_id),
            )
            outcome = await self.commands.submit(team_id, frame, job_id=job_id, wait_seconds=0)
            command_ids.append(outcome.command_id)
            logger.info(
                "webhook %s for team %s: delivery %s → job %s (command %d)",
                plugin.plugin_id,
                team_id,
                delivery_id or "-",
                job_id,
                outcome.command_id,
            )
        return Receipt(job_ids=job_ids, command_ids=command_ids, triggered=triggered)

    def _trigger_events(
        self, plugin: WebhookPlugin, headers: Mapping[str, str], body: bytes
    ) -> list[TriggerEvent]:
        """The delivery's trigger events, as every plugin that reads them finds them."""
        readers = [plugin] + [
            p for p in self.plugins.values() if plugin.plugin_id in p.reads and p is not plugin
        ]
        events: list[TriggerEvent] = []
        for reader in readers:
            if reader.parse_triggers is None:
                continue
            try:
                events += reader.parse_triggers(headers, body)
            except Exception:  # a parser's bug: the delivery is verified, it starts nothing
                logger.exception("webhook %s: the trigger parser failed", reader.plugin_id)
        return events

    async def _thread_comments(
        self, team_id: str, events: list[TriggerEvent]
    ) -> dict[str, WebhookComment]:
        """The new comments of `events` in threads team jobs came from, by job (Coro's
        own comments left out: they answer nothing)."""
        found: dict[str, WebhookComment] = {}
        for event in events:
            said = event.comment or ""
            if event.kind != "comment.created" or event.comment_id is None:
                continue
            if is_coro_comment(said):
                continue
            thread = await self.mirror.job_for_thread(team_id, event.key)
            if thread is None or thread.job_id in found:
                continue
            found[thread.job_id] = WebhookComment(
                plugin_id=thread.plugin_id,
                thread=event.key,
                comment_id=event.comment_id,
                author=event.author or "",
                body=said,
                author_association=event.author_association,
            )
        return found

    async def _job_for(self, team_id: str, ref: ExternalRef) -> str | None:
        """The job of `ref`: the mirror's exact ref, else the one job whose pull request
        of that number names the same repository in another spelling (a bare name, a
        clone URL, other letter case: as the agent gave it to `scm_clone_repo`)."""
        exact = await self.mirror.job_for_ref(team_id, ref)
        if exact is not None or ref.kind != "pull_request":
            return exact
        r = team_job_refs.c
        async with self.db.begin() as connection:
            rows = (
                await connection.execute(
                    select(r.job_id, r.repo_key).where(
                        r.team_id == team_id,
                        r.kind == ref.kind,
                        r.plugin_id == ref.plugin_id,
                        r.external_id == ref.external_id,
                    )
                )
            ).all()
        matches = {row.job_id for row in rows if repo_names_match(row.repo_key, ref.repo_key)}
        return matches.pop() if len(matches) == 1 else None

    async def _first_delivery(self, team_id: str, plugin_id: str, delivery_id: str) -> bool:
        """Record the delivery; False if it was recorded before. Purges expired rows."""
        async with self.db.begin() as connection:
            inserted = (
                await connection.execute(
                    insert(webhook_deliveries)
                    .values(team_id=team_id, plugin_id=plugin_id, delivery_id=delivery_id)
                    .on_conflict_do_nothing()
                    .returning(webhook_deliveries.c.delivery_id)
                )
            ).first()
        if inserted is not None:
            await self.purge_expired()
        return inserted is not None

    async def _forget_delivery(self, team_id: str, plugin_id: str, delivery_id: str) -> None:
        d = webhook_deliveries.c
        async with self.db.begin() as connection:
            await connection.execute(
                webhook_deliveries.delete().where(
                    d.team_id == team_id, d.plugin_id == plugin_id, d.delivery_id == delivery_id
                )
            )

    async def purge_expired(self) -> int:
        """Forget deliveries older than the retention (a batch; rows another purge holds
        are skipped, so concurrent deliveries never wait on each other)."""
        d = webhook_deliveries.c
        expired = (
            select(d.team_id, d.plugin_id, d.delivery_id)
            .where(d.received_at < func.now() - timedelta(days=DELIVERY_RETENTION_DAYS))
            .limit(PURGE_BATCH)
            .with_for_update(skip_locked=True)
        )
        async with self.db.begin() as connection:
            purged = await connection.execute(
                webhook_deliveries.delete()
                .where(tuple_(d.team_id, d.plugin_id, d.delivery_id).in_(expired))
                .returning(d.delivery_id)
            )
            return len(purged.all())


def _delivery_id(plugin: WebhookPlugin, headers: Mapping[str, str]) -> str | None:
    for name in plugin.delivery_id_headers:
        value = headers.get(name, "").strip()
        if value:
            return value[:MAX_DELIVERY_ID]
    return None


def _parse(plugin: WebhookPlugin, headers: Mapping[str, str], body: bytes) -> list[WebhookEvent]:
    if plugin.parse is None:
        return []
    try:
        return plugin.parse(headers, body)
    except Exception:  # a parser's bug: the delivery is verified, just not routable
        logger.exception("webhook %s: the parser failed", plugin.plugin_id)
        return []
