"""The entry objects of the processes the rig starts: blog_api.wsgi's app and Celery app with
the test-only fault hooks the environment asks for (FAULT_POINT, FAULT_DISPATCH), and the
fan-out's negative control task.

    gunicorn rig_wsgi:flask_app        celery -A rig_wsgi.celery_app worker
"""

from fault_hooks import FaultHooks, register_naive_fan_out

from blog_api.wsgi import celery_app, flask_app

hooks = FaultHooks.from_environment(flask_app)
register_naive_fan_out(celery_app)

__all__ = ["celery_app", "flask_app"]
