"""falcon.web."""
