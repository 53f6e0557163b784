"""falcon.screener."""
