"""Helpers every test layer shares: fakes, ports and waits, real Redis/S3/process servers."""
