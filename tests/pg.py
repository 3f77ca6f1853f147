"""PostgreSQL test helpers: a throw-away database per test session and a fresh schema per test,
and the `url`/`wh` warehouse fixtures (SQLite and PostgreSQL) the warehouse tests share.

The server is $GXPLAB_TEST_PG_URL, by default
postgresql+psycopg2://gxplab_test@127.0.0.1:5432/gxplab_test: the test role that
scripts/ensure_postgres.sh sets up (CREATEDB; its password is in ~/.pgpass, where libpq finds it,
so the URL carries none).
Use the fixtures in any test module (tests/conftest.py registers this plugin) and mark the tests
`@pytest.mark.postgres`. When the server cannot be reached the tests skip with the reason, or FAIL
when $CI is set (CI must not silently lose its PostgreSQL coverage).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import NoReturn

import pytest
from dagster_processes import missing_requirement
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, ProgrammingError

PG_URL_ENV = "GXPLAB_TEST_PG_URL"
DEFAULT_PG_URL = "postgresql+psycopg2://gxplab_test@127.0.0.1:5432/gxplab_test"


def admin_url() -> URL:
    """The server URL from the environment, with the psycopg2 driver named explicitly."""
    url = make_url(os.environ.get(PG_URL_ENV) or DEFAULT_PG_URL)
    return url.set(drivername="postgresql+psycopg2") if url.drivername == "postgresql" else url


def _unavailable(reason: str) -> NoReturn:
    missing_requirement(f"PostgreSQL tests need a server: {reason} (run scripts/ensure_postgres.sh "
                        f"or set {PG_URL_ENV})")


def _as_string(url: URL) -> str:
    return url.render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def pg_database() -> Iterator[URL]:
    """URL of a uniquely named database created for this session and dropped after it.

    A role without CREATEDB gets the configured database itself; tests still stay apart because
    each one works in its own schema (see `pg_url`).
    """
    url = admin_url()
    engine = create_engine(url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
    try:
        conn = engine.connect()
    except DBAPIError as exc:
        engine.dispose()
        redacted = url.render_as_string(hide_password=True)
        _unavailable(f"cannot connect to {redacted}: {str(exc.orig).strip().splitlines()[0]}")
    name = f"gxplab_test_{uuid.uuid4().hex[:12]}"
    try:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    except ProgrammingError:  # no CREATEDB privilege
        name = None
    try:
        yield url if name is None else url.set(database=name)
    finally:
        if name is not None:
            # Pooled connections of the code under test may still be open: end them first.
            conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d"),
                {"d": name},
            )
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.close()
        engine.dispose()


@pytest.fixture
def pg_url(pg_database: URL) -> Iterator[str]:
    """URL (as a string) whose search_path is a fresh schema in the session database."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = create_engine(pg_database, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield _as_string(pg_database.update_query_dict({"options": f"-csearch_path={schema}"}))
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path) -> str:
    """A warehouse URL: a SQLite file and a fresh PostgreSQL schema; a module may override it."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/warehouse.sqlite"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def wh(url: str) -> Iterator:
    """A results warehouse at `url`, upgraded to head."""
    from resources.clients.warehouse import Warehouse

    warehouse = Warehouse(url)
    warehouse.upgrade()
    yield warehouse
    warehouse.close()


@pytest.fixture
def pg_instance_url(pg_database: URL) -> Iterator[str]:
    """URL (as a string) of a fresh, empty database for one Dagster instance's storage.

    dagster-postgres keeps its run, event-log and schedule tables in the database's default schema,
    so each test gets a database of its own (created on the server of `pg_database`, dropped after).
    """
    name = f"gxplab_dagster_{uuid.uuid4().hex[:12]}"
    engine = create_engine(pg_database, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except ProgrammingError as exc:  # no CREATEDB privilege: such a role cannot host instances
        engine.dispose()
        _unavailable(f"the role cannot create databases for Dagster instances: {exc.orig}")
    try:
        yield _as_string(pg_database.set(database=name))
    finally:
        with engine.connect() as conn:
            conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d"),
                {"d": name},
            )
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        engine.dispose()


@pytest.fixture
def pg_instance(pg_instance_url: str, tmp_path) -> Iterator:
    """A Dagster instance whose run, event-log and schedule storage is on PostgreSQL
    (dagster-postgres), as in the production profile; local compute logs under tmp_path."""
    import dagster as dg

    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    overrides = {"storage": {"postgres": {"postgres_url": pg_instance_url}}}
    with dg.instance_for_test(overrides=overrides, temp_dir=str(home)) as instance:
        yield instance


@pytest.fixture
def instance(pg_instance):
    """The Dagster instance of the orchestration tests (sensors, schedules, automation): on
    PostgreSQL, as in production, so `make test` runs them against dagster-postgres."""
    return pg_instance


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that uses a PostgreSQL fixture carries the `postgres` marker (`-m postgres`)."""
    for item in items:
        if "pg_database" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)
