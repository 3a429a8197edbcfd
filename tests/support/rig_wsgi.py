"""The entry objects of the processes the rig starts: blog_api.wsgi's app and Celery app with
the test-only fault hooks the environment asks for (FAULT_POINT, FAULT_DISPATCH), and the
fan-out's negative control task.

    gunicorn support.rig_wsgi:flask_app        celery -A support.rig_wsgi.celery_app worker
"""

from blog_api.wsgi import celery_app, flask_app
from support.fault_hooks import FaultHooks, register_naive_fan_out

hooks = FaultHooks.from_environment(flask_app)
register_naive_fan_out(celery_app)

__all__ = ["celery_app", "flask_app"]
