"""What a job does to the outside world, importable and testable without Celery: here the
fan-out of a post to its author's subscribers (`fanout`) and the throttle that paces its
messages (`throttle`). The worker's tasks (blog_api.worker) claim a job, call one effect and
record its outcome.
"""
