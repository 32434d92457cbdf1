"""Durable state: SQLAlchemy models and the database connection. Everything else reaches storage through here."""
from storage.atomic import db_now, insert_ignore, locked, update_where, upsert  # noqa: F401
from storage.db import Store, head_revision, open_store  # noqa: F401
