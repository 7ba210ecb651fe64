"""The local web explorer (``convlens serve``; needs the ``web`` extra: FastAPI + uvicorn).

:func:`create_app` builds the FastAPI app: the page (plain HTML/JS/CSS in ``static/``)
and a JSON API that calls the library and ``render/``. ``jobs`` runs long work with
progress and cancel; ``storage`` keeps every file inside one private temp area.
"""

from __future__ import annotations

from convlens.server.app import create_app

__all__ = ["create_app"]
