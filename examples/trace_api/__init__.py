"""A trace-query API that answers only within the caller's trace scope."""
