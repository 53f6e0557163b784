"""falcon.jobs."""
