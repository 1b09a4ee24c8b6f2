"""The tests' own library: what test modules import, as opposed to fixtures (tests/conftest.py)
and real-server launchers (tests/servers/).

- `processes`: free ports, polling, children and titles read from /proc.
- `procfs`: memory, CPU time and descriptors of a process, for the abuse tests.
- `master`: the real master in a subprocess (`Master`, `spawn_master`, `config_text`).
- `gateway`: the same `mail {}` configuration on nginx or mailgate (`running_gateway`).
- `config`: builders for the `mail {}` blocks the gateway modules share.
- `clients`: a byte-exact line client, curl and `openssl s_client` wrappers, test messages.
- `metrics`: a scrape parsed and summed; a HUP that waits for the new workers.
- `resumption`: TLS connections to the real master, the worker that served each, resumption.
- `pki`: the session's server certificate and CA files; the TLS unit tests' PKI.
- `accounts`: the users the backends and the auth server know.
"""
