"""Sans-I/O parts of the bridge."""
