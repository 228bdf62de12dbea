"""`fluxserve keys` and `fluxserve usage`: operator commands working on the job store directly (their flags:
only where the store is, cli/flags.py add_store_flags)."""

from __future__ import annotations

import argparse
import time

from fluxserve.core.accounts import new_key
from fluxserve.processes.exit_codes import ExitCode
from fluxserve.store.protocols import KeyStore


def run_keys(store: KeyStore, args: argparse.Namespace) -> int:
    if args.action == "create":
        key, credential = new_key(args.name, admin=args.admin)
        store.create_key(key)
        print(f"created {key.key_id}{' (admin)' if key.admin else ''}. The credential is shown once:")
        print(f"  export FAL_KEY={credential}")
        return ExitCode.OK
    if args.action == "revoke":
        if not args.key_id or not store.revoke_key(args.key_id):
            print(f"no key {args.key_id!r}")
            return ExitCode.REFUSED
        print(f"revoked {args.key_id}")
        return ExitCode.OK
    for key in store.list_keys():
        created = time.strftime("%Y-%m-%d %H:%M", time.gmtime(key.created_at))
        flags = ", ".join(f for f, on in (("admin", key.admin), ("revoked", key.revoked)) if on)
        print(f"{key.key_id}  {created}  {key.name or '-'}  {flags}")
    return ExitCode.OK


def run_usage(store: KeyStore, key_id: str | None) -> int:
    rows = store.usage(key_id)
    print(f"{'day':<11} {'key':<17} {'endpoint':<27} {'requests':>8} {'images':>7} {'megapixels':>10}")
    for r in rows:
        print(f"{r['day']:<11} {r['key_id'] or '(no key)':<17} {r['app']:<27} {r.get('requests', 0):>8} "
              f"{r.get('images', 0):>7} {r.get('megapixels', 0):>10}")  # fmt: skip
    print(f"total megapixels: {sum(r.get('megapixels', 0) for r in rows)}")
    return ExitCode.OK
