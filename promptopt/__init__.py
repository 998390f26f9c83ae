"""promptopt: automatic prompt optimization."""
