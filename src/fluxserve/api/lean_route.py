"""Routes served without FastAPI's per-request machinery, for the few that clients call many times a second.

FastAPI solves a route's dependencies and validates each parameter on every request: about a third of a status
read's CPU, more than the store read itself. A lean route keeps its endpoint's signature for the OpenAPI
document, so what is documented is the function that runs, but is served by an adapter taking the Request
alone, which reads the same parameters the signature declares and calls that endpoint. Only for parameters
that need no validation (plain strings, the caller): anything FastAPI would refuse stays on a normal route.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Request, Response
from fastapi.routing import APIRoute

Adapter = Callable[[Request], Awaitable[Response]]


class LeanRoute(APIRoute):
    adapter: Adapter

    def get_route_handler(self) -> Adapter:
        return self.adapter


def lean_route(adapter: Adapter) -> type[APIRoute]:
    """An APIRoute class (add_api_route's route_class_override) whose requests go to `adapter`."""
    return type(f"Lean_{adapter.__name__}", (LeanRoute,), {"adapter": staticmethod(adapter)})
