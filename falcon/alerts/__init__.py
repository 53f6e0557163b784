"""falcon.alerts."""
