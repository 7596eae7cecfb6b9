"""What the coordinator and the workers share, one concept a home:

- ``config/`` settings, mapping spec, cron; ``run/`` the run's plan, window, values, statuses;
- ``checkpoint.py`` the incremental rules; ``chunk/`` loading one key range;
- ``scd/`` the SCD algorithm; ``dialects/`` per-database I/O and SQL pieces;
- ``lifecycle/`` finalize and reconcile; ``metadata/`` the metadata store;
- ``broker.py`` the Celery app factory; ``engines.py``, ``errors.py``, ``retry.py``.

Nothing here imports ``coordinator`` or ``workers`` (``make check`` enforces the layering).
"""
