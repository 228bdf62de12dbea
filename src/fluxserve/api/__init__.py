"""The HTTP layer: FastAPI routes and pydantic schemas. Never imports torch."""
