"""The WSGI entry point for gunicorn: ``gunicorn 'falcon.web.wsgi:app'``.

Settings come from the environment and /etc/falcon/falcon.toml, as for every Falcon process.
Run gunicorn with threaded workers so that live-update streams do not hold a whole worker:

    gunicorn --worker-class gthread --workers 2 --threads 8 --bind unix:/run/falcon/web.sock \\
        'falcon.web.wsgi:app'
"""

from __future__ import annotations

from falcon.web import create_app

app = create_app()
