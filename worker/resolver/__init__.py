"""The SMTP client-name lookup: the resolver on the loop and its DNS messages."""
