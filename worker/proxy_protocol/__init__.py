"""The PROXY protocol: headers read from balancers and written to backends."""
