"""The FastAPI application: JSON API under /api/v1 and the OpenAPI docs."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.staticfiles import StaticFiles

from insitu import __version__
from insitu.access.api import router as access_router
from insitu.access.permissions import Public
from insitu.access.ratelimit import SlidingWindowLimiter
from insitu.access.web import router as access_pages
from insitu.catalog.api import router as catalog_router
from insitu.core.platform import Platform
from insitu.datasets.api import router as datasets_router
from insitu.datasets.api import withdrawals_router
from insitu.datasets.pages import router as dataset_actions
from insitu.datasets.web import router as dataset_pages
from insitu.ingest.api import router as ingest_router
from insitu.jobs.api import flavors_router
from insitu.jobs.api import router as jobs_router
from insitu.ledger.api import router as ledger_router
from insitu.ledger.web import router as ledger_page
from insitu.releases.api import router as releases_router
from insitu.releases.web import router as release_pages
from insitu.tools.api import router as tools_router
from insitu.tools.web import router as tool_pages
from insitu.web import errors
from insitu.web.admin import router as admin_pages
from insitu.web.dicomweb import router as dicomweb_router
from insitu.web.explorer import api as explorer_api
from insitu.web.explorer import router as explorer_pages
from insitu.web.metrics import router as metrics_router
from insitu.web.pages import router as pages_router
from insitu.web.quarantine import router as quarantine_pages
from insitu.web.render import STATIC
from insitu.web.viewing import FrameCache, ScopeCache, Viewing
from insitu.web.work import router as work_pages

health_router = APIRouter(tags=["health"])


@health_router.get("/health", dependencies=[Public])
def health() -> dict[str, str]:
    """Liveness: the app is up."""
    return {"status": "ok", "version": __version__}


def create_app(
    platform: Platform, job_socket: int | None = None, job_owner: int | None = None
) -> FastAPI:
    """Build the app for one opened deployment (``job_socket``: the app a job's Unix socket
    serves, which takes only that job's token)."""
    app = FastAPI(
        title="insitu",
        version=__version__,
        description="In-situ processing of de-identified medical imaging data.",
    )
    app.state.platform = platform
    app.state.job_socket = job_socket
    app.state.job_owner = job_owner
    app.state.login_limiter = SlidingWindowLimiter(platform.settings.login_attempts_per_minute)
    app.state.viewing = Viewing(
        platform.store,
        platform.settings.secret_bytes(),
        SlidingWindowLimiter(platform.settings.viewer_frames_per_hour, 3600),
        FrameCache(),
    )
    app.state.viewer_scopes = ScopeCache()
    api = APIRouter(prefix="/api/v1")
    api.include_router(health_router)
    api.include_router(access_router)
    api.include_router(ingest_router)
    api.include_router(catalog_router)
    api.include_router(ledger_router)
    api.include_router(datasets_router)
    api.include_router(withdrawals_router)
    api.include_router(tools_router)
    api.include_router(jobs_router)
    api.include_router(flavors_router)
    api.include_router(releases_router)
    api.include_router(explorer_api)
    app.include_router(api)
    app.include_router(pages_router)
    app.include_router(metrics_router)
    app.include_router(dicomweb_router)
    app.include_router(explorer_pages)
    app.include_router(work_pages)
    app.include_router(ledger_page)
    app.include_router(tool_pages)
    app.include_router(admin_pages)
    app.include_router(dataset_actions)
    app.include_router(access_pages)
    app.include_router(dataset_pages)
    app.include_router(release_pages)
    app.include_router(quarantine_pages)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    errors.install(app)
    return app
