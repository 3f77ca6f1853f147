"""Alembic environment of the results warehouse.

Run through `Warehouse.upgrade()` or `python -m resources.clients.warehouse upgrade`, which pass an
open connection in `config.attributes["connection"]` (inside the caller's transaction). Without one,
it connects to the `sqlalchemy.url` main option, or renders SQL in offline mode (`--sql`).
"""

from alembic import context
from sqlalchemy import create_engine

from resources.clients.warehouse import METADATA


def _run(connection) -> None:
    # Batch mode lets later ALTERs work on SQLite, which cannot alter most column properties.
    context.configure(
        connection=connection,
        target_metadata=METADATA,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


config = context.config
if context.is_offline_mode():
    context.configure(
        url=config.get_main_option("sqlalchemy.url"), target_metadata=METADATA, literal_binds=True
    )
    with context.begin_transaction():
        context.run_migrations()
elif (connection := config.attributes.get("connection")) is not None:
    _run(connection)
else:
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()
