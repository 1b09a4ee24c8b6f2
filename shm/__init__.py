"""Shared memory: segments, locks, the TLS session ring and ticket keys. No sockets."""
