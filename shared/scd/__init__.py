"""The SCD algorithm: SCD1/SCD2 apply, replay and counting (``apply.py``), hard deletes
(``deletes.py``) and quarantine by bisection (``quarantine.py``), written once over a
target description (``target.py``) from dialect SQL pieces (``sql.py``)."""
