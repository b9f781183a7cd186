"""The team cloud control plane (`coro cloud`, SPEC §3).

One module per concept: `settings` (the environment), `db` and `schema` (PostgreSQL;
its own Alembic history under `migrations/`), `passwords`, `tokens` (JWTs and opaque
secrets), `throttle`, `auth` (users and sessions), `github` (OAuth login), `teams`,
`runner_tokens`, `webhook_secrets`; `app` assembles the FastAPI app from `routes/`, and
`server` serves it on uvicorn.
"""
