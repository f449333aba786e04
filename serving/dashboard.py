"""The creator dashboard: GET /creators/{creator_id} serves one static page; its script (a static file too) reads
the token from the link and fetches /v1/creators/{id}/stats with it. The page holds no data, so it needs no token.

Scripts, styles and Chart.js are served by the app (`mount_static`), so the Content-Security-Policy allows only
'self': no inline script, no CDN.
"""

from __future__ import annotations

from pathlib import Path as FilePath
from typing import Annotated

from fastapi import APIRouter, FastAPI, Path
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = FilePath(__file__).resolve().parent / "static"
STATIC_URL = "/static"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "Referrer-Policy": "no-referrer",  # the link may carry a token: never send it on to another site
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}

router = APIRouter(tags=["dashboard"], include_in_schema=False)


@router.get("/creators/{creator_id}", response_class=FileResponse)
async def creator_dashboard(creator_id: Annotated[str, Path(min_length=1, max_length=128)]) -> FileResponse:
    """The dashboard page; open it as /creators/{creator_id}#token=<creator token> (or ?token=)."""
    return FileResponse(STATIC / "dashboard.html", media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)


def mount_static(app: FastAPI) -> None:
    """Serve serving/static/ (the dashboard's script, styles and vendored Chart.js) at /static."""
    app.mount(STATIC_URL, StaticFiles(directory=STATIC), name="static")
