"""Tamper evidence of the audit trail: the hash chain, checkpoints and the integrity endpoint."""
