"""Versioned, schema-checked configuration profiles for gateways (example files live here)."""
