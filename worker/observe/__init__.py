"""Observability: Prometheus metrics and the access log."""
