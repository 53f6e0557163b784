"""falcon.strategy."""
