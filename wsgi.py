"""WSGI entry point for gunicorn: `gunicorn wsgi:app`."""
from billing_gateway import create_app

app = create_app()
