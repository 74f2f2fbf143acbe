"""``python -m insights_audit``: the ``insights-audit`` command."""

from insights_audit.cli import main

main()
