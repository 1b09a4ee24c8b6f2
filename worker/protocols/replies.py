"""nginx's fixed reply lines, byte for byte (``src/mail/ngx_mail_{imap,pop3,smtp}_*.c``).

Tests import these so that they read as specifications. Lines built from the configuration
(greetings with a server name, capability lists) are made by the protocol modules.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from mailgate.config.model import Protocol

CRLF = b"\r\n"

# IMAP (ngx_mail_imap_handler.c, ngx_mail_imap_module.c). Tagged lines are tag + line.
IMAP_GREETING = b"* OK IMAP4 ready\r\n"
IMAP_UNTAGGED = b"* "  # the "tag" of a reply to a line that had no valid tag
IMAP_OK = b"OK completed\r\n"
IMAP_NEXT = b"+ OK\r\n"  # continuation for a synchronizing literal {N}
IMAP_PLAIN_NEXT = b"+ \r\n"
IMAP_USERNAME = b"+ VXNlcm5hbWU6\r\n"
IMAP_PASSWORD = b"+ UGFzc3dvcmQ6\r\n"
IMAP_BYE = b"* BYE\r\n"
IMAP_INVALID_COMMAND = b"BAD invalid command\r\n"
IMAP_INTERNAL_ERROR = b"* BAD internal server error\r\n"
IMAP_CERT_ERROR = b"* BYE SSL certificate error\r\n"
IMAP_NO_CERT = b"* BYE No required SSL certificate\r\n"

# POP3 (ngx_mail_pop3_handler.c, ngx_mail_pop3_module.c)
POP3_GREETING = b"+OK POP3 ready\r\n"
POP3_OK = b"+OK\r\n"
POP3_NEXT = b"+ \r\n"
POP3_USERNAME = b"+ VXNlcm5hbWU6\r\n"
POP3_PASSWORD = b"+ UGFzc3dvcmQ6\r\n"
POP3_INVALID_COMMAND = b"-ERR invalid command\r\n"
POP3_INTERNAL_ERROR = b"-ERR internal server error\r\n"
POP3_CERT_ERROR = b"-ERR SSL certificate error\r\n"
POP3_NO_CERT = b"-ERR No required SSL certificate\r\n"
POP3_CAPA_HEADER = b"+OK Capability list follows\r\n"
POP3_AUTH_HEADER = b"+OK methods supported:\r\n"
POP3_LIST_END = b".\r\n"

# SMTP (ngx_mail_smtp_handler.c, ngx_mail_smtp_module.c, ngx_mail_auth_http_module.c)
SMTP_OK = b"250 2.0.0 OK\r\n"
SMTP_BYE = b"221 2.0.0 Bye\r\n"
SMTP_STARTTLS = b"220 2.0.0 Start TLS\r\n"
SMTP_NEXT = b"334 \r\n"
SMTP_USERNAME = b"334 VXNlcm5hbWU6\r\n"
SMTP_PASSWORD = b"334 UGFzc3dvcmQ6\r\n"
SMTP_INVALID_COMMAND = b"500 5.5.1 Invalid command\r\n"
SMTP_INVALID_PIPELINING = b"503 5.5.0 Improper use of SMTP command pipelining\r\n"
SMTP_INVALID_ARGUMENT = b"501 5.5.4 Invalid argument\r\n"
SMTP_AUTH_REQUIRED = b"530 5.7.1 Authentication required\r\n"
SMTP_BAD_SEQUENCE = b"503 5.5.1 Bad sequence of commands\r\n"
SMTP_INTERNAL_ERROR = b"451 4.3.2 Internal server error\r\n"
SMTP_CERT_ERROR = b"421 4.7.1 SSL certificate error\r\n"
SMTP_NO_CERT = b"421 4.7.1 No required SSL certificate\r\n"
SMTP_AUTH_ERROR_CODE = b"535 5.7.0"  # the default prefix of an auth_http failure line


# Per protocol, for the code that is not the protocol machine itself (auth_http, the backend
# login, the session's certificate check): the ``internal_server_error``, ``cert_error`` and
# ``no_cert`` lines of nginx's ``ngx_mail_protocol_t`` structs.
INTERNAL_SERVER_ERROR: Mapping[Protocol, bytes] = MappingProxyType(
    {
        Protocol.IMAP: IMAP_INTERNAL_ERROR,
        Protocol.POP3: POP3_INTERNAL_ERROR,
        Protocol.SMTP: SMTP_INTERNAL_ERROR,
    }
)
CERT_ERROR: Mapping[Protocol, bytes] = MappingProxyType(
    {
        Protocol.IMAP: IMAP_CERT_ERROR,
        Protocol.POP3: POP3_CERT_ERROR,
        Protocol.SMTP: SMTP_CERT_ERROR,
    }
)
NO_CERT: Mapping[Protocol, bytes] = MappingProxyType(
    {
        Protocol.IMAP: IMAP_NO_CERT,
        Protocol.POP3: POP3_NO_CERT,
        Protocol.SMTP: SMTP_NO_CERT,
    }
)
