"""virtainer's REST API: a FastAPI application over the core (virtainer.machine, .snapshots).

Modules: `settings` (ApiSettings), `app` (create_app), `server` (serve, run_in_thread: the seam the
container controller starts the API through), `routes/` (one router per resource), `backend`
(thread pool, per-VM operation guard, status cache), `events` (server-sent events), `client`
(the CLI's remote mode). Nothing is imported here: the CLI must not pay for FastAPI unless it
serves.
"""
