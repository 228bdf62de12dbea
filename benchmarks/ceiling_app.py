"""The ceiling: a bare FastAPI app answering a fixed JSON the size of a queued job's status body at
fluxserve's status path, served the way processes/api_process.py serves fluxserve (its connection-limit
protocol class, lifespan off, websockets off, its keep-alive, one process, its event loop (uvloop where
installed), a socket bound by its `bind`). What fluxserve's status read costs beyond this is fluxserve's own.

    python benchmarks/ceiling_app.py --port 8123
"""

from __future__ import annotations

import argparse
import asyncio

import uvicorn
from fastapi import FastAPI

from fluxserve.core.settings import ApiSettings
from fluxserve.processes.api_process import bind, connection_limits
from fluxserve.processes.connection_limits import protocol_class

BASE = "http://127.0.0.1:8000/fal-ai/flux/requests/6f1c3d2e-8a4b-4c5d-9e6f-0a1b2c3d4e5f"
STATUS_BODY = {"status": "IN_QUEUE", "request_id": "6f1c3d2e-8a4b-4c5d-9e6f-0a1b2c3d4e5f",
               "response_url": BASE, "status_url": f"{BASE}/status", "cancel_url": f"{BASE}/cancel",
               "logs": [], "queue_position": 99999}  # fmt: skip


def create_app() -> FastAPI:
    app = FastAPI()

    @app.get("/queue/fal-ai/flux/requests/{request_id}/status")
    async def status(request_id: str) -> dict:
        return STATUS_BODY

    return app


def event_loop_factory():
    """uvloop's loop where it is installed, as processes/api_process.py runs fluxserve; decided here, not
    imported from it, so a --src tree from before that choice is measured against the same ceiling."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port
    limits = connection_limits(ApiSettings())
    config = uvicorn.Config(create_app(), lifespan="off", log_level="warning", http=protocol_class(limits),
                            ws="none", timeout_keep_alive=limits.idle_timeout_s)  # fmt: skip
    sock = bind("127.0.0.1", port)
    print(f"ceiling serving http://127.0.0.1:{port}", flush=True)
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(uvicorn.Server(config).serve(sockets=[sock]))


if __name__ == "__main__":
    main()
