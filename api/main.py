"""The FastAPI application: assembled here, served by ``fraudstream api``."""

from __future__ import annotations

from fastapi import FastAPI

from detector import __version__


def create_app() -> FastAPI:
    app = FastAPI(
        title="fraudstream",
        version=__version__,
        description="Alert review and model control for the fraudstream detector.",
    )

    @app.get("/health", tags=["ops"])
    def health() -> dict[str, str]:
        """Liveness: the process is up and serving."""
        return {"status": "ok", "version": __version__}

    return app


app = create_app()
