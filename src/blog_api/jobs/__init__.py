"""Stage 3 of a post's path, the database side of background work: the outbox state machine
(`outbox`), the attempt at a job (`runner`: claim, run the effect, finish or release), the relay
that publishes due jobs (`relay`), the workers' heartbeat records (`heartbeats`), and the
fan-out's deliveries to subscribers (`deliveries`).

Nothing in this package knows Celery: the relay is handed a `publish` function by the worker
package (`blog_api.worker`), which owns the tasks, and the runner is handed the effect.
"""
