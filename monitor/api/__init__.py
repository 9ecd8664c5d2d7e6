"""The HTTP API (FastAPI): ``create_app`` builds it, ``make_server`` serves it with uvicorn."""

from monitor.api.app import create_app

__all__ = ["create_app"]
