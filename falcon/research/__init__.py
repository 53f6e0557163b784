"""falcon.research."""
