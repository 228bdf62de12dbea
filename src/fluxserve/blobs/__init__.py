"""Blob storage: generated images and uploads, bytes in and a key out (local disk or S3)."""
