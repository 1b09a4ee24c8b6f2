"""Random bytes in random chunks: only documented events come out, buffers stay capped."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailgate.config import model
from mailgate.worker.protocols import (
    MACHINES,
    NEED_DATA,
    PAUSED,
    Close,
    Login,
    Phase,
    Send,
    StartTLS,
)

SALT = b"<1.2@fuzz>"
WORDS = [
    b"a LOGIN ",
    b"AUTHENTICATE ",
    b"PLAIN",
    b"LOGIN",
    b"CRAM-MD5",
    b"EXTERNAL",
    b"{3}",
    b"{2+}",
    b'"',
    b"\\",
    b" ",
    b"\r\n",
    b"\n",
    b"\r",
    b"STARTTLS",
    b"CAPABILITY",
    b"USER ",
    b"PASS ",
    b"APOP ",
    b"AUTH ",
    b"STLS",
    b"CAPA",
    b"EHLO x",
    b"MAIL FROM:<>",
    b"RCPT TO:<a@b>",
    b"*",
    b"AHUAcA==",
    b"dXNlcg==",
    b"\0",
    b"NOOP",
    b"QUIT",
    b"LOGOUT",
]
chunks = st.lists(st.one_of(st.binary(max_size=40), st.sampled_from(WORDS)), max_size=60)
configs = st.fixed_dictionaries(
    {
        "starttls": st.sampled_from(list(model.StartTLS)),
        "max_errors": st.integers(min_value=1, max_value=6),
        "imap_client_buffer": st.integers(min_value=16, max_value=300),
        "smtp_client_buffer": st.integers(min_value=16, max_value=300),
        "smtp_greeting_delay": st.sampled_from([0.0, 1.0]),
        "imap_auth": st.just(("plain", "cram-md5", "external")),
        "pop3_auth": st.just(("plain", "apop", "cram-md5", "external")),
        "smtp_auth": st.just(("plain", "login", "cram-md5", "external", "none")),
    }
)


def run(protocol: model.Protocol, settings_: dict, data: list[bytes], fail_logins: bool) -> None:
    server = model.ServerConfig(
        source=model.Source("t", 1), listens=(), protocol=protocol, server_name="h", **settings_
    )
    machine = MACHINES[protocol](server, SALT)
    capacity = machine.read_size()
    if protocol is not model.Protocol.SMTP or not settings_["smtp_greeting_delay"]:
        machine.greeting()
    for chunk in [*data, b""]:
        while True:
            event = machine.next_event()
            assert isinstance(event, Send | StartTLS | Login | Close) or event in (
                NEED_DATA,
                PAUSED,
            )
            if isinstance(event, StartTLS):
                machine.tls_started()
            elif isinstance(event, Login):
                if not fail_logins:
                    machine.take_pipelined()
                    return
                machine.login_failed(b"no", None)
            elif event is PAUSED and machine.phase is Phase.GREETING:
                machine.greeting()
            elif isinstance(event, Close):
                assert machine.next_event() == Close()
                return
            elif event in (NEED_DATA, PAUSED):
                break
        assert machine.buffered <= capacity
        room = machine.read_size()
        machine.receive_data(chunk[:room] if chunk else b"")
        assert machine.buffered <= capacity


fuzz = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@fuzz
@given(configs, chunks, st.booleans())
def test_imap_machine_survives_random_input(settings_, data, fail_logins) -> None:
    run(model.Protocol.IMAP, settings_, data, fail_logins)


@fuzz
@given(configs, chunks, st.booleans())
def test_pop3_machine_survives_random_input(settings_, data, fail_logins) -> None:
    run(model.Protocol.POP3, settings_, data, fail_logins)


@fuzz
@given(configs, chunks, st.booleans())
def test_smtp_machine_survives_random_input(settings_, data, fail_logins) -> None:
    run(model.Protocol.SMTP, settings_, data, fail_logins)
