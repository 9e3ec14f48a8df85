"""The coordinator's web application (``protocol serve``): a Starlette app over the registry.

>>> from protocol.web import create_app      # doctest: +SKIP
>>> app = create_app("protocol.db")          # an ASGI application for uvicorn  # doctest: +SKIP
"""

from .app import create_app

__all__ = ["create_app"]
