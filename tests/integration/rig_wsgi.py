"""The entry objects of the processes the rig starts: the product's web app with its Celery app,
and the test-only fault hooks the environment asks for (FAULT_POINT, FAULT_DISPATCH).

    gunicorn rig_wsgi:flask_app        celery -A rig_wsgi.celery_app worker

One Flask app serves both here (the hooks are installed once, on it); the product's own entry
objects are `blog_api.wsgi.flask_app` and `blog_api.worker_app.celery_app`.
"""

from fault_hooks import FaultHooks

from blog_api.worker import celery_init_app
from blog_api.wsgi import flask_app

celery_app = celery_init_app(flask_app)
hooks = FaultHooks.from_environment(flask_app)

__all__ = ["celery_app", "flask_app"]
