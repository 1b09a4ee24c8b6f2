"""The worker process: event loop, TLS, protocol machines, auth_http, backends, relay."""
