"""Entry objects for servers.

gunicorn --no-control-socket -w 2 "blog_api.wsgi:flask_app"
"""

from __future__ import annotations

from blog_api import create_app

flask_app = create_app()
