"""Metadata database: process_log, chunk_log, checkpoint (models, migrations, store)."""
