"""The trust boundary: everything that reaches a URL a client named (image_url fetches, webhook deliveries)."""
