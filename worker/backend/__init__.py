"""Logging in to the backend (sans-IO) and the encodings it needs."""
