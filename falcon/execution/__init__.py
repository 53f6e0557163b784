"""falcon.execution."""
