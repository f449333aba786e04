"""The feed route answered in front of FastAPI's request machinery, for the calls that pass every check.

A feed is the call the app makes for every screen. Under load at 1M videos, uvicorn, Starlette and FastAPI held
~25 % of the server's samples around the feed route (BENCHMARKS "Feed at 1M videos"): exception wrappers, exit
stacks, dependency resolution, five nested `send` wrappers. Skipping the part FastAPI adds made feeds 1.12× as
fast (paired runs). `FeedLane` sits in front of that stack. It takes a GET that the feed route matches
(`APIRoute.matches`, so the same path rules) and runs the route's own steps: the app-key check (`app_model`), the
query model and the cursor (`check_feed`), and the answer (`answer_feed`). It then sends the body itself.

Anything else goes to FastAPI untouched: other paths and methods, and a feed call that fails a check (401, 400,
422, 503, a user id over 128 characters). FastAPI then gives its own error answer. The checks write nothing, so
a call handed over has done nothing twice. OpenAPI still documents the route. `FEED_SERVE_FEED_LANE=false`
sends feeds through FastAPI's stack too. Turn it off when something added to FastAPI must see feed calls: app
middleware (`app.add_middleware`) and `dependency_overrides` of `app_model` apply to FastAPI's stack
only.
"""

from __future__ import annotations

from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.routing import Match

from serving.auth import app_model
from serving.observability import ASGIApp, Message, Receive, Scope, Send
from serving.routes import USER_ID_MAX, answer_feed, check_feed


class FeedLane:
    """ASGI middleware: feed calls that pass every check answered directly, everything else passed to `app`."""

    def __init__(self, app: ASGIApp, route: APIRoute) -> None:
        self.app, self.route = app, route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        match, child = self.route.matches(scope)
        if match is not Match.FULL or len(child["path_params"]["user_id"]) > USER_ID_MAX:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            model = await app_model(request)
            call = check_feed(QueryParams(scope["query_string"]))
        except (HTTPException, RequestValidationError):  # FastAPI answers these in its own words
            await self.app(scope, receive, send)
            return
        scope.update(child)  # the route, for the request metrics' label
        body, headers = await answer_feed(request, model, child["path_params"]["user_id"], call)
        await send(_start(body, headers))
        await send({"type": "http.response.body", "body": body})


def _start(body: bytes, headers: dict[str, str]) -> Message:
    """The response start of a JSON body, with what Starlette's `Response` would send."""
    raw = [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]
    raw += [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
    return {"type": "http.response.start", "status": 200, "headers": raw}
