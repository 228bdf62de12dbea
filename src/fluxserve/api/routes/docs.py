"""API docs at /docs: Swagger UI 5 rendering /openapi.json, with every asset served by fluxserve (no CDN).

FastAPI generates OpenAPI 3.1, which Swagger UI reads from 5.0 on. The assets come from the pinned
`fastapi-offline` package (Swagger UI 5.32.6, Apache-2.0, in `fastapi_offline/static`); only its files are
used.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from fluxserve.api.security_headers import docs_policy

ASSETS = "/docs-assets"
# validatorUrl None: Swagger UI would otherwise show a badge fetched from validator.swagger.io, a request that
# leaves the origin (and that the page's CSP would block, logging a violation).
UI_PARAMETERS = {"validatorUrl": None}


def install(app: FastAPI) -> None:
    app.mount(ASSETS, StaticFiles(directory=str(files("fastapi_offline") / "static")), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        page = get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="fluxserve API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon.png",
            swagger_ui_parameters=UI_PARAMETERS,
        )
        page.headers["Content-Security-Policy"] = docs_policy(bytes(page.body).decode())
        return page
