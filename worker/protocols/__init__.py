"""Sans-IO protocol state machines: bytes in, replies and actions out.

``ImapMachine``, ``Pop3Machine`` and ``SmtpMachine`` share one API (see ``base``):
``greeting()``, ``receive_data()``/``read_size()``, ``next_event()``, ``tls_started()``,
``login_failed()``, ``internal_error()``, ``take_pipelined()``.
"""

from mailgate.config import model
from mailgate.worker.protocols.base import MailMachine, Phase
from mailgate.worker.protocols.events import (
    NEED_DATA,
    PAUSED,
    Close,
    Credentials,
    Event,
    LocalProtocolError,
    Login,
    Send,
    StartTLS,
    Wait,
)
from mailgate.worker.protocols.imap import ImapMachine
from mailgate.worker.protocols.pop3 import Pop3Machine
from mailgate.worker.protocols.smtp import SmtpMachine

MACHINES: dict[model.Protocol, type[ImapMachine | Pop3Machine | SmtpMachine]] = {
    model.Protocol.IMAP: ImapMachine,
    model.Protocol.POP3: Pop3Machine,
    model.Protocol.SMTP: SmtpMachine,
}

__all__ = [
    "MACHINES",
    "NEED_DATA",
    "PAUSED",
    "Close",
    "Credentials",
    "Event",
    "ImapMachine",
    "LocalProtocolError",
    "Login",
    "MailMachine",
    "Phase",
    "Pop3Machine",
    "Send",
    "SmtpMachine",
    "StartTLS",
    "Wait",
]
