"""Threshold edge gateway: hears shoppers at the store door and triggers entry offers."""

__version__ = "0.1.0"
