"""falcon.paper."""
