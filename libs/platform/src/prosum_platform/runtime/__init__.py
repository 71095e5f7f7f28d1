"""Processes of the embedded runtime: the tansu Kafka broker (and later the chain node)."""
