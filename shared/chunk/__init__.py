"""The chunk: load one key range of a run (``load.py``), resolving duplicate keys
(``duplicates.py``) and reporting what it did (``result.py``)."""
