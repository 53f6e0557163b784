"""The JSON API, versioned by path (``/api/v1``)."""
