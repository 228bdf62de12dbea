"""Where jobs live between processes: the store protocols, one backend per deployment shape (SQLite, Redis)."""
