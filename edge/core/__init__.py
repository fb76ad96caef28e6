"""Sans-I/O core: frames, identity, presence, offers and the wire contract.

Nothing in this package may import asyncio or an I/O library; tests/unit/test_core_purity.py checks it.
"""
