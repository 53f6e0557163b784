"""Alembic migrations; installed as ``falcon.migrations`` so that wheels carry them."""
