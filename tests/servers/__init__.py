"""Real backend servers (Dovecot, Postfix) for mailgate's tests and for `make run`.

Each server runs as its own instance from a config written under a temporary folder, on free
loopback ports, so tests never depend on (or collide with) Debian's system instances.

- `tests.servers.dovecot.running_dovecot()`: IMAP + POP3 + a SASL socket for Postfix.
- `tests.servers.postfix.running_postfix()`: SMTP with XCLIENT, SASL through Dovecot, delivery
  into the Dovecot users' maildirs.
- `tests/servers/demo.py start|stop DIR`: daemonized instances on fixed ports for `make run`.
"""
