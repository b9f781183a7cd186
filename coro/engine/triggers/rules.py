"""Which rule an event satisfies, and the job it starts: pure functions the local poller
(`coro.engine.triggers.poller`) and the team cloud's webhook ingress share.

* `matches(rule, event)`: the rule's plugin and repositories, its event (a label, an
  assignee, a status, a comment mentioning its handle) and who did it. Who may: the
  rule's `permittedUsers` when set (any of the names the author goes by); otherwise, for
  a GitHub comment, the repository's owners, members and collaborators (GitHub's
  `author_association`), and anyone for the rest (labelling, assigning and moving an
  issue already take the tracker's permission; a Jira comment, its project's). A comment
  Coro posted (it starts with `coro_comment_prefix`) never matches.
* `job_for(rule, event)`: the `NewJob` (what `POST /jobs` makes through
  `CreateJobBody.new_job`) under `trigger_job_id(rule.id, event)`, with `origin` set.
  The description is the issue's title and body, or a mention's comment without the
  handle. A GitHub issue is the job's `repo` (unless the rule's `params.repo` names one)
  and its `params.ticket`; a Jira issue is its `jiraTicketId` (the ticket is read into
  `params.ticket` and the workflow's `jira` entry phase starts; `params.repo` comes from
  the rule). A pull request is worked on where it lives: `repo` is its head repository,
  `params.branch` its head branch (what `scm_clone_repo {repo: params.repo, branch:
  params.branch}` checks out, and where `scm_push` pushes), `params.baseBranch` its base
  and `params.pullRequest` all of it (with the number, for `scm_*` calls); its thread is
  the SCM plugin's (`origin.pluginId`, also `params.gitProvider`).
"""

from __future__ import annotations

import copy
import hashlib
import re
from typing import Any

from coro.config.triggers import TriggerRule
from coro.domain.models import JobOrigin
from coro.engine.service import NewJob, job_id_label
from coro.engine.thread_replies import MAINTAINERS, is_coro_comment
from coro.engine.triggers.events import TriggerEvent

#: the limit of a job's description (`POST /jobs`)
MAX_DESCRIPTION_CHARS = 100_000


def trigger_job_id(rule_id: str, event: TriggerEvent) -> str:
    """The id of the job `event` starts by `rule_id`: `<thread>-t<12 hex>` (e.g.
    `api-12-t3f2a9c01b7de`), the same for every delivery of the event."""
    digest = hashlib.sha256(f"{rule_id}\n{event.event_key}".encode()).hexdigest()[:12]
    repo = event.scope.rsplit("/", 1)[-1]
    thread = f"{repo}-{event.number}" if event.number is not None else event.key
    label = job_id_label(thread).lstrip("._-")  # an id starts with a letter or digit
    return f"{label}-t{digest}" if label else f"trigger-t{digest}"


def same_scope(configured: str, scope: str) -> bool:
    """Whether a rule's repository (or project) is the event's (ignoring case)."""
    return configured.strip().removesuffix(".git").casefold() == scope.strip().casefold()


def _handle(handle: str) -> re.Pattern[str]:
    # `@coro` but not `@coroutine`, `me@coro.dev` or `@coro-bot`
    return re.compile(rf"(?<![\w@./-]){re.escape(handle)}(?![\w-])", re.IGNORECASE)


def mentions(text: str, handle: str) -> bool:
    return _handle(handle).search(text) is not None


def without_handle(text: str, handle: str) -> str:
    """`text` without the mentions of `handle` (and the `,` or `:` after one)."""
    stripped = _handle(handle).sub("", text)
    lines = [
        re.sub(r"^[\s,:;]+", "", re.sub(r"[ \t]{2,}", " ", line)).rstrip()
        for line in stripped.splitlines()
    ]
    return "\n".join(lines).strip()


def permitted(rule: TriggerRule, event: TriggerEvent) -> bool:
    """Whether the event's author may start the rule's job (see the module docstring)."""
    if rule.permitted_users is not None:
        allowed = {user.strip().lstrip("@").casefold() for user in rule.permitted_users}
        names = event.author_ids or ((event.author,) if event.author else ())
        return any(name.lstrip("@").casefold() in allowed for name in names)
    if event.kind == "comment.created" and event.provider == "github":
        return (event.author_association or "").upper() in MAINTAINERS
    return True


def matches(rule: TriggerRule, event: TriggerEvent) -> bool:
    """Whether `event` starts `rule`'s job (see the module docstring)."""
    if rule.plugin != event.plugin_id or not any(same_scope(r, event.scope) for r in rule.repos):
        return False
    if rule.on == "issue.labeled":
        wanted = rule.label or ""
        hit = event.kind == "issue.labeled" and (event.label or "").casefold() == wanted.casefold()
    elif rule.on == "issue.assigned":
        wanted = (rule.assignee or "").lstrip("@").casefold()
        names = event.assignee_ids or ((event.assignee,) if event.assignee else ())
        hit = event.kind == "issue.assigned" and any(
            name.lstrip("@").casefold() == wanted for name in names
        )
    elif rule.on == "issue.transitioned":
        wanted = rule.to_status or ""
        hit = (
            event.kind == "issue.transitioned"
            and (event.status or "").casefold() == wanted.casefold()
        )
    else:
        text = event.comment or ""
        hit = (
            event.kind == "comment.created"
            and rule.handle is not None
            and mentions(text, rule.handle)
            and not is_coro_comment(text)
        )
    return hit and permitted(rule, event)


def description_for(rule: TriggerRule, event: TriggerEvent) -> str:
    """What the job is asked to do: a mention's comment (without the handle), else the
    issue's title and body."""
    text = ""
    if event.kind == "comment.created" and rule.handle is not None:
        text = without_handle(event.comment or "", rule.handle)
    if not text:
        text = f"{event.title}\n\n{event.body}".strip()
    return text[:MAX_DESCRIPTION_CHARS]


def job_for(
    rule: TriggerRule,
    event: TriggerEvent,
    *,
    pr_plugin: str | None = None,
    seen_comment_id: str | None = None,
) -> NewJob:
    """The job `event` starts by `rule` (see the module docstring). `pr_plugin`: the SCM
    plugin a pull request's thread belongs to; `seen_comment_id`: the thread's newest
    comment when the event is not one (answers are the comments after it)."""
    params: dict[str, Any] = copy.deepcopy(rule.params)
    configured_repo = params.pop("repo", None)
    repo = configured_repo if isinstance(configured_repo, str) and configured_repo else None
    jira = event.provider == "jira"
    thread_plugin = event.plugin_id
    if event.pull_request:
        repo = event.head_repo or event.scope
        if event.head_branch:
            params["branch"] = event.head_branch
        if event.base_branch:
            params["baseBranch"] = event.base_branch
        params["pullRequest"] = {
            "repo": event.scope,
            "number": event.number,
            "url": event.url,
            "headRepo": event.head_repo or event.scope,
            "headBranch": event.head_branch,
            "baseBranch": event.base_branch,
        }
        if pr_plugin is not None:
            thread_plugin = pr_plugin
            params.setdefault("gitProvider", pr_plugin)
    elif not jira:
        repo = repo or event.scope
        params["ticket"] = {
            "key": event.key,
            "title": event.title,
            "description": event.body,
            "url": event.url,
        }
    origin = JobOrigin(
        rule_id=rule.id,
        event_key=event.event_key,
        plugin_id=thread_plugin,
        kind="pull_request" if event.pull_request else "issue",
        key=event.key,
        url=event.url,
        author=event.author,
        seen_comment_id=event.comment_id or seen_comment_id,
    )
    return NewJob(
        workflow_path=rule.workflow_path,
        params=params,
        repo=repo,
        description=description_for(rule, event) or None,
        jira_ticket_id=event.key if jira else None,
        trigger_source="jira" if jira else "webhook",
        job_id=trigger_job_id(rule.id, event),
        origin=origin,
    )
