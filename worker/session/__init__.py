"""One client session from accept to close, and the factory that makes them."""
