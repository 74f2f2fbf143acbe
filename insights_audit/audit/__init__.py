"""What every resource shares about the audit trail: entries, views and their counters, chain
order, rollups, kept windows and the service's keys."""
