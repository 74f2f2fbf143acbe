"""WSGI entry point: ``gunicorn wsgi:app``."""

from insights_audit import create_app

app = create_app()
