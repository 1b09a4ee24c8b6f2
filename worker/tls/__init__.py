"""TLS: contexts per server, parameters, client certificates, session caches, ticket keys."""
