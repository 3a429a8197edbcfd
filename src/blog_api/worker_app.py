"""The Celery worker's entry object (deliberately not named `app`, which Celery would pick first).

celery -A blog_api.worker_app.celery_app worker --loglevel=INFO     # each worker runs a relay too
"""

from __future__ import annotations

from blog_api import create_app
from blog_api.worker import FlaskCelery, celery_init_app

flask_app = create_app(CLI=False)
celery_app: FlaskCelery = celery_init_app(flask_app)
