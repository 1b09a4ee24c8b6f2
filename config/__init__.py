"""nginx-syntax configuration: lexer, directive tables, typed and validated model.

Pure: no sockets and no OS calls beyond reading the configuration files themselves.
"""
