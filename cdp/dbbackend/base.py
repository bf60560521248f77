"""PostgreSQL backend that starts the embedded server on first connection.

Used only when DATABASE_URL is unset. Starting lazily (rather than at settings import) keeps
`manage.py check`, `makemigrations --check` and the Celery/gunicorn masters free of side
effects; the first process that actually needs the database brings it up.
"""

from django.conf import settings
from django.db.backends.postgresql import base

from cdp import embedded


class DatabaseWrapper(base.DatabaseWrapper):
    def get_connection_params(self):
        params = super().get_connection_params()
        # The test runner connects to "postgres" to create test databases: never create those here.
        database = self.settings_dict["NAME"] if params.get("dbname") == self.settings_dict["NAME"] else "postgres"
        server = embedded.ensure_running(settings.CDP_DATA_DIR, database)
        params.update(host=server["host"], port=server["port"], user=server["user"])
        return params
