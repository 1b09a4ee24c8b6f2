"""TLS: contexts per server, settings, client certificates, session caches, ticket keys.

``native`` holds every call below pyOpenSSL's public API; nothing else here reaches past it.
"""
