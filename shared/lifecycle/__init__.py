"""How a run ends: ``finalize.py`` (decide, sum, move the checkpoint, the hard-delete
pass of ``deletes.py``) and ``reconcile.py`` (no run stays RUNNING forever)."""
