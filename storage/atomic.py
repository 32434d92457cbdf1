"""Row-level building blocks for read-modify-write code: a row locked for this transaction, a compare-and-set
UPDATE, insert-or-ignore and insert-or-update on a unique key, and the database's clock.

Use them inside `Store.write()`. Write transactions are already serialised (storage.db), so these are what keeps
code correct on its own terms: a row read with `locked()` cannot change under the transaction on any database
that honours `FOR UPDATE`, and `update_where()` decides and writes in one statement.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterable, Sequence, TypeVar

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

M = TypeVar("M")


def locked(session: Session, model: type[M], ident: Any) -> M | None:
    """`model` row `ident`, locked until the transaction ends (`SELECT … FOR UPDATE`; SQLite's write
    transaction already excludes other writers), read fresh from the database even if the session holds it."""
    return session.get(model, ident, with_for_update=True, populate_existing=True)


def update_where(session: Session, model: type, ident: Any, *conditions: Any, **values: Any) -> bool:
    """`UPDATE model SET values WHERE id = ident AND conditions`: a compare-and-set in one statement.

    Returns whether the row matched (False: it is gone, or a condition no longer holds). Objects already
    loaded in `session` are not refreshed; read the row again (or use `locked()`) to see the new values.
    """
    stmt = (update(model).where(model.id == ident, *conditions).values(**values)
            .execution_options(synchronize_session=False))
    return session.execute(stmt).rowcount == 1


def _dialect_insert(session: Session, model: type):
    name = session.get_bind().dialect.name
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    elif name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    else:
        return None
    return dialect_insert(model)


def insert_ignore(session: Session, model: type, rows: Sequence[dict], keys: Iterable[str]) -> int:
    """Insert each row unless one with the same `keys` (a unique constraint of `model`) exists; returns how
    many were inserted. `INSERT … ON CONFLICT (keys) DO NOTHING` on PostgreSQL and SQLite."""
    rows, keys = list(rows), list(keys)
    if not rows:
        return 0
    stmt = _dialect_insert(session, model)
    if stmt is None:  # another database: look, then insert (correct under Store.write()'s serialisation)
        added = 0
        for row in rows:
            exists = select(model).where(*(getattr(model, k) == row[k] for k in keys)).limit(1)
            if session.scalar(exists) is None:
                session.execute(insert(model).values(**row))
                added += 1
        return added
    # RETURNING lists the rows really inserted (rowcount is not reliable for multi-row statements).
    stmt = stmt.values(rows).on_conflict_do_nothing(index_elements=keys).returning(model.id)
    return len(session.execute(stmt).all())


def upsert(session: Session, model: type, rows: Sequence[dict], keys: Iterable[str],
           update_columns: Iterable[str]) -> None:
    """Insert each row, or update `update_columns` of the row with the same `keys` (a unique constraint):
    `INSERT … ON CONFLICT (keys) DO UPDATE` on PostgreSQL and SQLite, one statement, no lost write."""
    rows, keys, cols = list(rows), list(keys), list(update_columns)
    if not rows:
        return
    stmt = _dialect_insert(session, model)
    if stmt is None:
        for row in rows:
            current = session.scalar(select(model).where(*(getattr(model, k) == row[k] for k in keys))
                                     .with_for_update())
            if current is None:
                session.execute(insert(model).values(**row))
            else:
                for c in cols:
                    setattr(current, c, row[c])
        return
    stmt = stmt.values(rows)
    session.execute(stmt.on_conflict_do_update(index_elements=keys,
                                               set_={c: getattr(stmt.excluded, c) for c in cols}))


def db_now(session: Session) -> datetime:
    """The database server's clock (UTC, timezone-aware): one clock for every host sharing the database."""
    if session.get_bind().dialect.name == "sqlite":
        # SQLite runs in this process: its clock is this host's; strftime keeps the milliseconds.
        text = session.scalar(select(func.strftime("%Y-%m-%d %H:%M:%f", "now")))
        return datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=timezone.utc)
    value = session.scalar(select(func.clock_timestamp()) if session.get_bind().dialect.name == "postgresql"
                           else select(func.current_timestamp()))
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
