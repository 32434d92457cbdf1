"""Durable state: SQLAlchemy models and the database connection. Everything else reaches storage through here."""
from storage.db import Store, open_store  # noqa: F401
