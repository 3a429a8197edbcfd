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
# The app reads X-Forwarded-For/-Proto/-Host itself (TRUSTED_PROXIES, werkzeug's ProxyFix), so
# gunicorn acts on no forwarded header, from any peer. Its defaults trust 127.0.0.1, where nginx
# and every local client connect from: a client's `SCRIPT_NAME` header became the app's script
# name (an HTML 500 when the path did not start with it) and contradictory X-Forwarded-Proto /
# X-Forwarded-Ssl headers an HTML 400. Header names with an underscore are dropped (header_map).
forwarded_allow_ips = ""
forwarder_headers = ""
secure_scheme_headers: dict[str, str] = {}
