"""Configuration: the config file and its environment overrides (``settings.py``), the
mapping spec (``mapping.py``) and cron schedules (``cron.py``)."""
