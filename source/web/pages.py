"""The HTML pages: the queue's status page, one page per task, and a login form that sets the token cookie."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from urllib.parse import parse_qs

from fastapi import APIRouter, Cookie, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from source.web.auth import COOKIE, Scope, Tokens
from source.web.csrf import CsrfGuard

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
COOKIE_MAX_AGE = 30 * 24 * 3600


def build_pages(tokens: Tokens, csrf: CsrfGuard) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    def page(request: Request, name: str, cookie: str | None, **context: object) -> Response:
        scope = tokens.scope_of(cookie)
        if scope is Scope.NONE:
            return RedirectResponse("/login", status_code=303)
        return TEMPLATES.TemplateResponse(request, name, {
            "can_write": scope >= Scope.WRITE, "auth_required": tokens.required,
            "csrf_token": csrf.token_for(cookie), **context})

    @router.get("/", response_class=HTMLResponse)
    def index(request: Request, cookie: Annotated[str | None, Cookie(alias=COOKIE)] = None) -> Response:
        return page(request, "index.html", cookie)

    @router.get("/tasks/{task_id:path}", response_class=HTMLResponse)
    def task_page(request: Request, task_id: str,
                  cookie: Annotated[str | None, Cookie(alias=COOKIE)] = None) -> Response:
        return page(request, "task.html", cookie, task_id=task_id)

    @router.get("/login", response_class=HTMLResponse)
    def login_form(request: Request) -> Response:
        return TEMPLATES.TemplateResponse(request, "login.html", {"error": None, "auth_required": tokens.required})

    @router.post("/login", response_class=HTMLResponse)
    async def login(request: Request) -> Response:
        token = (parse_qs((await request.body()).decode(errors="replace")).get("token") or [""])[0].strip()
        if tokens.scope_of(token) is Scope.NONE:
            return TEMPLATES.TemplateResponse(request, "login.html", {"error": "unknown token",
                                                                      "auth_required": tokens.required},
                                              status_code=401)
        response = RedirectResponse("/", status_code=303)
        # HttpOnly: page scripts never see the token; SameSite=Strict: other sites cannot post with it;
        # Secure whenever the page came over https (uvicorn reads X-Forwarded-Proto from a local proxy).
        response.set_cookie(COOKIE, token, max_age=COOKIE_MAX_AGE, httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")
        return response

    @router.post("/logout")
    def logout() -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE)
        return response

    return router
