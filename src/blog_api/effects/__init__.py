"""Stage 5 of a post's path: what a job does to the outside world, one module per effect: the
author's notification (`notifications`), the v2 audit line (`audit`), the confirmation e-mail
(`confirmations`), the fan-out of a post to its author's subscribers (`fanout`, paced by
`throttle`), and the SMTP client they share (`mailer`).

An effect is a function `(job) -> JobStatus` that reads what it needs, acts, and says how it
went (or raises one of `blog_api.jobs.errors`). It neither claims nor finishes its job
(`blog_api.jobs.runner` does) and knows no Celery: a test calls it directly.
"""
