"""GET /usage: megapixels (per image, rounded up), images and requests per key, endpoint and UTC day.
A key sees its own usage; an admin key (or anyone, with auth off) sees every key's."""

from __future__ import annotations

from typing import Any, Optional

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool

from fluxserve.api.auth import Caller, caller
from fluxserve.api.deps import Services, services

router = APIRouter(tags=["ops"])


@router.get("/usage")
async def usage(key_id: Optional[str] = None, svc: Services = Depends(services),
                who: Caller = Depends(caller)) -> dict[str, Any]:  # fmt: skip
    wanted = key_id if who.admin else who.key_id
    rows = await run_in_threadpool(svc.store.usage, wanted)
    return {"usage": rows, "total_megapixels": sum(r.get("megapixels", 0) for r in rows)}
