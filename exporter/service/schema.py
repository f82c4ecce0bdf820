"""What ``Store.migrate`` needs besides Alembic: the lock that migrating processes take turns on,
and the recognition of a database that ``create_all`` made before Alembic."""

from __future__ import annotations

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

# Any 64-bit number, the same in every process: the key of the advisory lock that migrations take.
_MIGRATION_LOCK_KEY = 0x6578706F72746572  # "exporter"

# Every column of the tables that `Base.metadata.create_all` made before Alembic, which is the
# schema of the baseline revision; a database holding them and no alembic_version is stamped.
_CREATE_ALL_COLUMNS = {
    "models": {"name", "parent", "display_name", "model_type", "path", "create_time", "update_time"},
    "operations": {
        "id",
        "name",
        "parent",
        "model_name",
        "output_config",
        "state",
        "progress_percent",
        "create_time",
        "update_time",
        "output_dir",
        "error",
        "report",
        "attempts",
        "lease_owner",
        "lease_expires",
        "cancel_requested",
        "principal",
    },
}


def lock_for_migration(connection: Connection) -> None:
    """Begin the migration's transaction holding a lock that other migrating processes wait for."""
    dialect = connection.dialect.name
    if dialect == "postgresql":
        # Released by the transaction's commit or rollback.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
    elif dialect == "sqlite":
        # The driver opens no transaction for DDL by itself; this one takes the write lock at once
        # (waiting up to the connection's busy timeout), and Connection.commit() ends it.
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        connection.begin()


def made_by_create_all(connection: Connection) -> bool:
    """Whether the store's tables exist without Alembic's version table (made before Alembic).

    Raises when only part of that schema is there: stamping it would hide a missing column."""
    tables = set(inspect(connection).get_table_names())
    if "alembic_version" in tables or not tables & _CREATE_ALL_COLUMNS.keys():
        return False
    missing = []
    for table, columns in _CREATE_ALL_COLUMNS.items():
        if table not in tables:
            missing.append(f"table {table}")
            continue
        present = {column["name"] for column in inspect(connection).get_columns(table)}
        missing += [f"column {table}.{name}" for name in sorted(columns - present)]
    if missing:
        raise RuntimeError(
            "the database has store tables but no alembic_version table, and it lacks "
            f"{', '.join(missing)}: it is not the schema that the Alembic baseline stands for, "
            "so it is not stamped; bring it to that schema by hand, then migrate"
        )
    return True


# The columns each later revision adds. A database that ``create_all`` made from models newer than
# the baseline already has them: it is stamped at the newest revision whose columns are all there.
_LATER_COLUMNS = {
    "0002": {"operations": {"fence", "heartbeat_at", "destination", "dispatched_at"}},
}


def newest_present(connection: Connection, baseline: str) -> str:
    """The newest revision whose columns a database made by ``create_all`` already has."""
    found = baseline
    for revision, tables in _LATER_COLUMNS.items():
        for table, columns in tables.items():
            present = {column["name"] for column in inspect(connection).get_columns(table)}
            if not columns <= present:
                return found
        found = revision
    return found
