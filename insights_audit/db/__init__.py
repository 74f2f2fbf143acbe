"""Database plumbing: the engine, the unit of work, statements run on the driver, JSON and
CSV written by PostgreSQL, migrations, the app role and the list of orgs."""
