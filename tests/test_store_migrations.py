"""The store's schema under Alembic, on real SQLite and PostgreSQL databases.

PostgreSQL must run at 127.0.0.1:5432 with trust auth for user postgres: these tests fail, and do
not skip, when it does not.
"""

from __future__ import annotations

import multiprocessing
import traceback
import uuid
from datetime import UTC, datetime

import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from exporter.core.errors import Code
from exporter.service.migrations import BASELINE, alembic_config
from exporter.service.store import Base, ModelRow, State, Store, cancelled_status

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
TABLES = {"models", "operations", "alembic_version"}
HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()


@pytest.fixture
def postgres_url():
    """A throw-away database on the local PostgreSQL, dropped after the test."""
    name = f"exporter_migrations_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("postgres_url")


def tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def versions(store: Store) -> list[str]:
    with store.engine.connect() as connection:
        return [row[0] for row in connection.execute(text("SELECT version_num FROM alembic_version"))]


def a_model(name: str = "m") -> ModelRow:
    now = datetime.now(UTC)
    return ModelRow(
        name=f"projects/p/locations/l/models/{name}",
        parent="projects/p/locations/l",
        display_name=name,
        model_type="image_classification",
        path="/models/" + name,
        create_time=now,
        update_time=now,
    )


def test_one_head_and_a_baseline():
    script = ScriptDirectory.from_config(alembic_config())
    assert len(script.get_heads()) == 1
    assert script.get_revision(BASELINE).down_revision is None


def test_a_store_only_connects(database_url):
    store = Store(database_url)
    assert tables(database_url) == set()
    store.engine.dispose()


def test_fresh_database_upgrades_to_head(database_url):
    store = Store(database_url)
    store.migrate()
    assert tables(database_url) == TABLES
    assert versions(store) == [HEAD]
    store.add_model(a_model())
    assert store.get_model(a_model().name).display_name == "m"
    store.engine.dispose()


def test_the_server_migrates_on_start(database_url, tmp_path):
    from exporter.service.app import create_app
    from exporter.service.settings import ServiceSettings

    app = create_app(ServiceSettings(data_dir=tmp_path, database_url=database_url), start_workers=False)
    assert tables(database_url) == TABLES
    assert versions(app.state.store) == [HEAD]
    app.state.store.engine.dispose()


def test_migrate_twice_is_a_no_op(database_url):
    store = Store(database_url)
    store.migrate()
    store.add_model(a_model())
    operation = store.create_operation("projects/p/locations/l", a_model().name, {"modelFormat": "tflite"})
    store.migrate()
    Store(database_url).migrate()  # another server starting later
    assert versions(store) == [HEAD]
    assert store.get_model(a_model().name) is not None
    assert store.get_operation(operation.name).output_config == {"modelFormat": "tflite"}
    store.engine.dispose()


def test_database_made_by_create_all_is_stamped_not_failed(database_url):
    engine = create_engine(database_url)
    Base.metadata.create_all(engine)  # what Store.__init__ did before Alembic
    engine.dispose()
    assert tables(database_url) == {"models", "operations"}

    store = Store(database_url)
    store.add_model(a_model("kept"))
    store.migrate()
    assert tables(database_url) == TABLES
    assert versions(store) == [HEAD]
    assert store.get_model(a_model("kept").name) is not None
    store.engine.dispose()


def test_part_of_the_old_schema_fails_loudly(database_url):
    engine = create_engine(database_url)
    Base.metadata.tables["models"].create(engine)
    engine.dispose()
    store = Store(database_url)
    with pytest.raises(RuntimeError, match="table operations"):
        store.migrate()
    assert "alembic_version" not in tables(database_url)
    store.engine.dispose()


def test_old_schema_without_a_later_column_fails_loudly(database_url):
    """A database from before `operations.principal` existed is not the baseline: no stamp."""
    engine = create_engine(database_url)
    Base.metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(text("DROP INDEX ix_operations_principal"))
        connection.execute(text("ALTER TABLE operations DROP COLUMN principal"))
    engine.dispose()
    store = Store(database_url)
    with pytest.raises(RuntimeError, match="column operations.principal"):
        store.migrate()
    assert "alembic_version" not in tables(database_url)
    store.engine.dispose()


def test_migrated_schema_equals_the_orm_models(database_url):
    """Fails when a model changes without a migration: write the next revision."""
    store = Store(database_url)
    store.migrate()
    with store.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)
    assert differences == []
    store.engine.dispose()


def test_downgrade_to_base_and_up_again(database_url):
    store = Store(database_url)
    store.migrate()
    with store.engine.begin() as connection:
        command.downgrade(alembic_config(connection=connection), "base")
    assert tables(database_url) == {"alembic_version"}
    store.migrate()
    assert tables(database_url) == TABLES
    assert versions(store) == [HEAD]
    store.engine.dispose()


def _migrate_in_process(url: str, barrier, results) -> None:
    try:
        store = Store(url)
        barrier.wait(timeout=60)
        store.migrate()
        store.engine.dispose()
        results.put("ok")
    except BaseException:  # noqa: BLE001  (reported to the test, which fails on it)
        results.put(traceback.format_exc())


def test_processes_migrating_at_once_all_succeed(database_url):
    processes = 4
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(processes), context.Queue()
    started = [
        context.Process(target=_migrate_in_process, args=(database_url, barrier, results)) for _ in range(processes)
    ]
    for process in started:
        process.start()
    outcomes = [results.get(timeout=120) for _ in started]
    for process in started:
        process.join(timeout=30)
    assert outcomes == ["ok"] * processes, "\n".join(outcomes)
    assert [process.exitcode for process in started] == [0] * processes
    store = Store(database_url)
    assert tables(database_url) == TABLES
    assert versions(store) == [HEAD]
    store.engine.dispose()


def test_error_statuses_carry_their_codes(tmp_path):
    assert cancelled_status() == {"code": int(Code.CANCELLED), "message": "the operation was cancelled", "details": []}
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    store.migrate()
    operation = store.create_operation("projects/p/locations/l", "m", {})
    assert store.claim("worker-1", lease_seconds=60).id == operation.id
    assert store.release_lost("worker-1", max_attempts=1, reason="the worker died") == 1
    row = store.get_operation(operation.name)
    assert row.state == State.FAILED.value
    assert row.error == {
        "code": int(Code.ABORTED),
        "message": "the worker died; gave up after 1 attempts",
        "details": [],
    }
    store.engine.dispose()
