"""The offline `local` SCM plugin: bare git repositories on disk, pull requests in the
runner's state backend (SPEC §4.7).

Settings (`plugins.installed.local.config`, camelCase, all optional):

* `reposDir` (default `$CORO_HOME/repos`): where the bare repositories live, one
  `<name>.git` directory per repository.
* `defaultBranch` (default `main`): the first branch of a repository created here.

A repository is named by its `name` (letters, digits, `.`, `_`, `-`; at most 100
characters; no `..`); its clone URL is the absolute path of the bare repository, which
`GitWorkspace.clone` takes like any URL, and jobs push their branches back to it.

Pull requests, their comments, approvals and requested reviewers are kept by the
runner's state backend (`PluginContext.prs`, a `coro.state.prs.PullRequestStore`).
Pull request numbers are one sequence across every repository, so a number alone names
a pull request (`coro pr approve 3`); the protocol methods, which also take the
repository, check that it matches. Developers review through the CLI (`coro pr …`), the
dashboard and the HTTP API (`/scm/local/…`); agents through the `ScmPlugin` protocol.

Merging happens inside the bare repository, without a working tree (`bare`), always
with a merge commit, so the history shows the pull request.

Every change (created, approved, commented, reviewers requested, merged, declined)
calls the listeners registered with `add_listener`, so the runner can poll at once.

Modules: `validation` (settings, names, limits, errors), `bare` (git plumbing in a bare
repository), `core` (what both sides share), `plugin` (the `ScmPlugin` protocol),
`admin` (`LocalScm`: the protocol plus the review operations; `create`).
"""

from __future__ import annotations

from coro.plugins.scm.local.admin import LocalScm, create
from coro.plugins.scm.local.bare import COMMITTER_EMAIL, COMMITTER_NAME
from coro.plugins.scm.local.core import PLUGIN_ID
from coro.plugins.scm.local.plugin import AGENT_AUTHOR
from coro.plugins.scm.local.validation import (
    MAX_BODY_CHARS,
    MAX_COMMENT_CHARS,
    MAX_DESCRIPTION_CHARS,
    MAX_DIFF_BYTES,
    MAX_PERSON_CHARS,
    MAX_REVIEWERS,
    MAX_TITLE_CHARS,
    REPO_NAME,
    LocalScmConflict,
    LocalScmError,
    LocalScmNotFound,
    LocalScmSettings,
    check_repo_name,
    parse_settings,
)

__all__ = [
    "AGENT_AUTHOR",
    "COMMITTER_EMAIL",
    "COMMITTER_NAME",
    "MAX_BODY_CHARS",
    "MAX_COMMENT_CHARS",
    "MAX_DESCRIPTION_CHARS",
    "MAX_DIFF_BYTES",
    "MAX_PERSON_CHARS",
    "MAX_REVIEWERS",
    "MAX_TITLE_CHARS",
    "PLUGIN_ID",
    "REPO_NAME",
    "LocalScm",
    "LocalScmConflict",
    "LocalScmError",
    "LocalScmNotFound",
    "LocalScmSettings",
    "check_repo_name",
    "create",
    "parse_settings",
]
