"""Sans-IO protocol state machines: bytes in, replies and actions out."""
