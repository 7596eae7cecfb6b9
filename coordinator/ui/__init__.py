"""The run dashboard (`chordload ui`) and its /metrics."""
