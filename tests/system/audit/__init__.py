"""Outside acceptance audit: the gateway as SDK users and hostile clients see it."""
