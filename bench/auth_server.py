"""The benchmark's auth_http server: every known user goes to one IMAP backend.

It runs as its own process (``python -m bench.auth_server``) so its GIL never competes with the
harness's own clients, and it answers from a fixed table without recording requests, so a long
run does not grow it. The protocol is nginx's: nginx.org/en/docs/mail/ngx_mail_auth_http_module.html
"""

from __future__ import annotations

import argparse
import http.server
import urllib.parse


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        user = urllib.parse.unquote(self.headers.get("Auth-User", ""), encoding="latin-1")
        password = urllib.parse.unquote(self.headers.get("Auth-Pass", ""), encoding="latin-1")
        self.send_response_only(200)
        if self.server.users.get(user) == password:
            self.send_header("Auth-Status", "OK")
            self.send_header("Auth-Server", self.server.backend_host)
            self.send_header("Auth-Port", str(self.server.backend_port))
        else:
            self.send_header("Auth-Status", "Invalid login or password")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: thousands of requests per run."""


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # 50 concurrent sessions must never see a refused connect

    def __init__(self, port: int, backend: str, users: dict[str, str]) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        host, _, backend_port = backend.rpartition(":")
        self.backend_host, self.backend_port = host, int(backend_port)
        self.users = users


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backend", required=True, help="HOST:PORT of the IMAP backend")
    parser.add_argument("--user", action="append", default=[], help="NAME:PASSWORD")
    args = parser.parse_args()
    users = dict(entry.split(":", 1) for entry in args.user)
    _Server(args.port, args.backend, users).serve_forever()


if __name__ == "__main__":
    main()
