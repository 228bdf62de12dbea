"""When stored blobs expire: one empty record per blob, named after the blob and the second it expires.

The index lives beside the blobs, as blob-store records, not in the job store: a blob now outlives its job
record (purged after --retention-hours), so the job store cannot be where its end is kept; records live
wherever the blobs live (a local folder or the bucket every node shares), work the same on both job-store
backends with no schema to migrate, and reading the time off the name lets a sweep decide from one listing.

Records: expiries/<blob key>.<expiry as whole Unix seconds>
"""

from __future__ import annotations

import math

from fluxserve.blobs.base import KEY_PATTERN, BlobStore

PREFIX = "expiries/"


class BlobExpiries:
    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs

    def record(self, key: str, expires_at: float) -> None:
        """Note when key expires; written before the blob, so a stored blob with an end is always swept."""
        self.blobs.put_record(f"{PREFIX}{key}.{math.ceil(expires_at)}", b"")

    def sweep(self, now: float) -> int:
        """Delete every blob whose expiry has passed, and its record; the number of blobs removed."""
        removed = 0
        for name, _ in self.blobs.list_records(PREFIX):
            key, _, stamp = name[len(PREFIX) :].rpartition(".")
            if not (KEY_PATTERN.fullmatch(key) and stamp.isdigit()) or int(stamp) > now:
                continue
            self.blobs.delete(key)
            self.blobs.delete_record(name)
            removed += 1
        return removed
