"""The web server: JSON API, status pages and static files over one task store (``tasks serve``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from source.db import TaskStore
from source.web.api import build_router
from source.web.auth import Tokens
from source.web.body_limit import MAX_BODY_BYTES, BodyLimit
from source.web.changes import ChangeHub
from source.web.csrf import CsrfGuard
from source.web.files import OutputRoot
from source.web.pages import build_pages
from source.web.params_schema import add_typed_params

STATIC = Path(__file__).parent / "static"


def create_app(store: TaskStore, *, output_root: Path, tokens: Tokens | None = None,
               refresh_seconds: float = 1.0) -> FastAPI:
    tokens = tokens or Tokens()
    hub = ChangeHub(store, refresh_seconds=refresh_seconds)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        hub.start()
        try:
            yield
        finally:
            hub.stop()

    app = FastAPI(title="Headless WanGP tasks", version="1", lifespan=lifespan,
                  description="Submit, follow and fetch the worker queue's tasks. Bearer tokens: read or write scope.")
    app.state.hub = hub
    csrf = CsrfGuard()
    app.include_router(build_router(store, hub, OutputRoot(output_root), tokens, csrf))
    app.include_router(build_pages(tokens, csrf))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    plain_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:  # built once, on the first request for it (it loads every handler)
            schema = plain_openapi()
            add_typed_params(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
    return app
