"""gunicorn settings for production: `gunicorn -c gunicorn.conf.py blog_api.wsgi:flask_app`.

Every value can be overridden from the environment (GUNICORN_* below) or the command line.
"""

import os

# Loopback only: sync workers serve one connection each, so a client sending its request slowly
# holds a worker; only a buffering proxy on this machine talks to gunicorn (deploy/nginx.conf).
bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "sync")
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 20
# Requests never talk to the broker (the workers' relay publishes the jobs they store), so a
# short keep-alive and the default sync workers are enough for a JSON API behind a proxy.
keepalive = 5
accesslog = "-"
# gunicorn 27 would otherwise create a control socket in ~/.gunicorn/.
control_socket_disable = True
proc_name = "blog-api"
