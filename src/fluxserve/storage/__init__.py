"""Blob storage for generated images (and, later, uploads)."""
