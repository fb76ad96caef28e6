"""Async loops joining adapters to the core."""
