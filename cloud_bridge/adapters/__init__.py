"""Adapters of the bridge: loyalty records storage."""
