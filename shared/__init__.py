"""What both sides of chordload need: settings, mapping spec, metadata, dialect adapters,
checkpoint values and the error types. Nothing here imports Celery."""
