"""The team cloud control plane (`coro cloud`, SPEC §3).

One module per concept: `settings` (the environment), `db`, `schema` and `migrate`
(PostgreSQL; its own Alembic history under `migrations/`), `passwords`, `tokens` (JWTs
and opaque secrets), `throttle`, `auth` (users and sessions), `github` (OAuth login),
`teams`, `runner_tokens`, `webhook_secrets`, `errors` (each an HTTP status). `app`
assembles the FastAPI app from `routes/` (one router per concept, wire shapes in
`models`, per-request dependencies in `deps`), and `server` serves it on uvicorn.
"""
