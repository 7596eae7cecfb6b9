"""The run vocabulary: its plan and the stored document (``plan.py``), mode and load kind
(``modes.py``), statuses, task ids, the window and chunk ranges, and typed values."""
