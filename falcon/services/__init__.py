"""falcon.services."""
