"""Job store: SQLAlchemy 2 async. SQLite by default (zero setup), PostgreSQL in production."""

from common.store.db import Database
from common.store.models import Base, ChunkResult, Job, Notification, OutboxMessage

__all__ = ["Base", "ChunkResult", "Database", "Job", "Notification", "OutboxMessage"]
