"""Routes served without FastAPI's per-request machinery, for those clients call many times a second.

FastAPI solves a route's dependencies and validates each parameter on every request: a third of a status
read's CPU and about two thirds of a submit's (FastAPI 0.163 recomputes each dependency's cache key and
kind per request). A lean route keeps its endpoint, with its signature, for the OpenAPI document and for
FastAPI's own handler, and is served by an adapter that reads the same parameters from the Request and calls
that endpoint. An adapter serves only what it can read exactly as FastAPI would; for anything else it hands
the request to FastAPI's handler (`fastapi_handler`), so every refusal is FastAPI's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Request, Response
from fastapi.routing import APIRoute

Handler = Callable[[Request], Awaitable[Response]]
Adapter = Callable[[Request, Handler], Awaitable[Response]]


class LeanRoute(APIRoute):
    adapter: Adapter

    def get_route_handler(self) -> Handler:
        fastapi_handler, adapter = super().get_route_handler(), self.adapter

        async def lean(request: Request) -> Response:
            return await adapter(request, fastapi_handler)

        return lean


def lean_route(adapter: Adapter) -> type[APIRoute]:
    """An APIRoute class (add_api_route's route_class_override) whose requests go to `adapter`."""
    return type(f"Lean_{adapter.__name__}", (LeanRoute,), {"adapter": staticmethod(adapter)})
