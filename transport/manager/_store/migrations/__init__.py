"""Alembic migrations of the Manager's database (run by ``Store.open``; no alembic.ini).

``env.py`` takes the connection that :func:`transport.manager._store._engine.migrate`
passes in ``config.attributes["connection"]``; ``versions/`` holds one module per revision.
A new revision: copy the newest one, set ``revision``/``down_revision``, write
``upgrade()`` for both dialects (``op.get_bind().dialect.name``).
"""
