"""``make bench``: see bench.py."""
