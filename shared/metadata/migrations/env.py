"""Alembic environment: the URL comes from the caller (``chordload db upgrade``)."""

from alembic import context

from shared.metadata.models import Base

config = context.config
connection = config.attributes.get("connection")

if connection is None:
    from sqlalchemy import create_engine

    url = config.get_main_option("sqlalchemy.url")
    if url is None:
        raise RuntimeError("no connection and no sqlalchemy.url: use `chordload db upgrade`")
    engine = create_engine(url)
    with engine.begin() as conn:
        context.configure(
            connection=conn,
            target_metadata=Base.metadata,
            render_as_batch=conn.dialect.name == "sqlite",
        )
        context.run_migrations()
    engine.dispose()
else:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
