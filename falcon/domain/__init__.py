"""falcon.domain."""
