"""For development only: ``make run``'s server, the embedded PostgreSQL and the demo data."""
