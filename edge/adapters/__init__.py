"""Adapters: translate library objects and errors (aiosqlite, paho, bleak, serial, gpio), nothing more."""
