"""Background upkeep of the job store, run by every API process (all of it is safe to run concurrently):
fail jobs past their start deadline, requeue jobs whose worker died, remove job records and uploads past
retention, and blobs past their own expiry (blobs/expiry.py)."""

from __future__ import annotations

import logging
import time
from typing import Callable

from fluxserve.blobs.base import BlobStore
from fluxserve.blobs.expiry import BlobExpiries
from fluxserve.blobs.uploads import Uploads
from fluxserve.core.periodic import Periodic
from fluxserve.core.settings import LeaseSettings, UpkeepSettings
from fluxserve.store.protocols import JobQueue

log = logging.getLogger(__name__)

TICK_S = 1.0


class Upkeep:
    def __init__(
        self,
        store: JobQueue,
        blobs: BlobStore,
        settings: UpkeepSettings,
        leases: LeaseSettings,
        clock: Callable[[], float] = time.time,
        uploads: Uploads | None = None,
    ) -> None:
        self.store, self.blobs, self.settings, self.clock = store, blobs, settings, clock
        self.leases = leases
        self.uploads = uploads
        self._last_sweep = float("-inf")
        self.loop = Periodic("upkeep", TICK_S, self.tick)
        self.start, self.stop = self.loop.start, self.loop.stop

    def tick(self) -> None:
        self.store.expire_start_deadlines()
        self.store.requeue_expired(self.leases.max_attempts)
        now = self.clock()
        if now - self._last_sweep >= self.settings.sweep_interval_s:
            self._last_sweep = now
            self.sweep(now)

    def sweep(self, now: float) -> int:
        """Remove job records that finished more than retention_s ago, and blobs past their expiry; the number
        of blobs removed. A purged job's images stay: like fal's CDN files, they live until their own end."""
        self.store.purge_finished(before=now - self.settings.retention_s)
        expired = BlobExpiries(self.blobs).sweep(now)
        if expired:
            log.info("retention: removed %d expired files", expired)
        if self.uploads is not None:
            # On the uploads' own schedule (StorageSettings.upload_retention_s), checked as often as results.
            removed = self.uploads.sweep()
            if removed:
                log.info("retention: removed %d uploads", removed)
        return expired
