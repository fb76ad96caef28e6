"""Async loops of the bridge."""
