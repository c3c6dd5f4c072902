"""The console's pages and static files, all read from this package.

Pages are shells: the layout, the forms and the tables' headings. They carry
no data and need no key; the scripts fill them in through ``/admin/v1`` with
the admin key kept in the tab's ``sessionStorage``. Because that key is worth
stealing, every page forbids inline and foreign scripts (Content-Security-Policy)
and the scripts build the DOM with ``textContent``, never from HTML strings.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from importlib.resources.abc import Traversable

from fastapi import APIRouter, Request
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from starlette.responses import HTMLResponse, Response

router = APIRouter(include_in_schema=False)

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}
ASSET_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
# Lower-case names with one extension: nothing hidden, nothing climbing out of static/.
_ASSET_PART = re.compile(r"^[a-z0-9][a-z0-9_-]*(\.[a-z0-9]+)?$")


@dataclass(frozen=True)
class Page:
    slug: str
    title: str
    summary: str

    @property
    def path(self) -> str:
        return f"/console/{self.slug}" if self.slug else "/console"

    @property
    def template(self) -> str:
        return f"{self.slug or 'overview'}.html"


PAGES = (
    Page("", "Overview", "Requests, tokens, cost and errors per day; the busiest keys and models."),
    Page("requests", "Requests", "Every request, newest first: find a failure, open it, see its rounds and tool calls."),
    Page("keys", "Keys", "Gateway keys: mint one, change its limits, scopes and models, revoke it."),
    Page("endpoints", "Endpoints", "Named assistants: those from the configuration file and those stored here."),
    Page("plugins", "Plugins", "Each organisation's tools, their JSON schemas and health; try a tool."),
    Page("playground", "Playground", "Chat with an endpoint or a model and watch every tool call as it runs."),
    Page("whatsapp", "WhatsApp", "Conversations with the messages in and out, and dead letters to requeue."),
    Page("audit", "Audit log", "Every admin action: who, what, on what, when and from where."),
    Page("oauth", "OAuth", "Applications connected to /mcp by OAuth: approve a sign-in, see and revoke them."),
)
_BY_SLUG = {page.slug: page for page in PAGES}
SIGN_IN = Page("sign-in", "Sign in", "Sign in with an admin key.")


@cache
def _templates() -> Environment:
    return Environment(
        loader=PackageLoader("runtime.console", "templates"),
        autoescape=select_autoescape(default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _render(page: Page, *, status_code: int = 200) -> HTMLResponse:
    html = _templates().get_template(page.template).render(page=page, pages=PAGES)
    return HTMLResponse(html, status_code=status_code, headers=PAGE_HEADERS)


@router.get("/console")
async def overview() -> HTMLResponse:
    return _render(PAGES[0])


@router.get("/console/sign-in")
async def sign_in() -> HTMLResponse:
    return _render(SIGN_IN)


def _static_file(path: str) -> Traversable | None:
    parts = path.split("/")
    if not all(_ASSET_PART.match(part) for part in parts):
        return None
    resource = files("runtime.console").joinpath("static", *parts)
    return resource if resource.is_file() else None


@router.get("/console/static/{path:path}")
async def static_file(path: str, request: Request) -> Response:
    resource = _static_file(path)
    media_type = ASSET_TYPES.get("." + path.rpartition(".")[2]) if "." in path else None
    if resource is None or media_type is None:
        return Response("Not found", status_code=404, media_type="text/plain")
    body = resource.read_bytes()
    etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
    # Revalidated on every load: an upgraded gateway never serves yesterday's script to today's page.
    headers = {"ETag": etag, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=media_type, headers=headers)


@router.get("/console/{slug}")
async def page(slug: str) -> HTMLResponse:
    found = _BY_SLUG.get(slug)
    if found is None or not slug:
        return _render(Page("not-found", "Not found", f"There is no console page '{slug}'."), status_code=404)
    return _render(found)
