"""``insights-audit import``: a document store's view logs and audit entries, brought into the
trail from ``mongoexport`` files (``documents``), mapped and checked as live entries are
(``mapping``), loaded once however often the import runs (``loading``), then recorded, sealed
and counted (``run``)."""
