"""``chordload verify``: prove that a target's current rows equal its source query's rows,
range by range on the workers (``ranges.py``), with one canonical row code (``rowcode.py``)
so that every pairing of databases compares values, not their drivers' Python types."""
