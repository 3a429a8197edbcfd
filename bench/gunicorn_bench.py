"""The one gunicorn configuration every benchmarked app runs under (only bind/class vary)."""

import os

bind = os.environ["BENCH_BIND"]
workers = 2
worker_class = os.environ.get("BENCH_WORKER_CLASS", "sync")
threads = int(os.environ.get("BENCH_THREADS", "1"))
timeout = 30
graceful_timeout = 5
keepalive = 5
backlog = 2048
accesslog = None
errorlog = "-"
loglevel = "warning"
control_socket_disable = True
