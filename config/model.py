"""The typed configuration that the rest of mailgate reads.

Every value is typed once, at parse time: times are seconds as ``float``, sizes are bytes as
``int``, flags are ``bool``. Paths of files that mailgate reads (certificates, keys, includes)
are absolute, resolved against the folder of the configuration file that named them; the pid
and log paths are absolute, resolved against the prefix. A ``ServerConfig`` already holds the
merged value of every directive (server, else mail, else nginx's default), so readers never
look at the mail level.
"""

from __future__ import annotations

import enum
import ipaddress
import socket
from dataclasses import dataclass, field

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Source:
    """Where a directive was written."""

    path: str
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}"


class Protocol(enum.Enum):
    IMAP = "imap"
    POP3 = "pop3"
    SMTP = "smtp"


class StartTLS(enum.Enum):
    OFF = "off"
    ON = "on"
    ONLY = "only"


class VerifyClient(enum.Enum):
    OFF = "off"
    ON = "on"
    OPTIONAL = "optional"
    OPTIONAL_NO_CA = "optional_no_ca"


class ProxyProtocolOut(enum.Enum):
    """``proxy_protocol`` towards the backend (mailgate: ``off``, ``on`` = v1, ``v2``)."""

    OFF = "off"
    V1 = "on"
    V2 = "v2"


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """``so_keepalive=on|off|[idle]:[intvl]:[cnt]``; ``None`` parts keep the system value."""

    on: bool
    idle: int | None = None
    interval: int | None = None
    count: int | None = None


@dataclass(frozen=True, slots=True)
class Listen:
    """One ``listen`` directive with all its parameters applied."""

    family: socket.AddressFamily
    host: str  # "0.0.0.0", "::", "127.0.0.1", or the socket path for AF_UNIX
    port: int  # 0 for AF_UNIX
    source: Source
    ssl: bool = False
    proxy_protocol: bool = False
    backlog: int = 511
    rcvbuf: int | None = None
    sndbuf: int | None = None
    bind: bool = False
    ipv6only: bool = True
    so_keepalive: KeepAlive | None = None
    multipath: bool = False

    @property
    def sockaddr(self) -> tuple[str, int] | str:
        """The address as ``socket.bind`` takes it for this family."""
        if self.family == socket.AF_UNIX:
            return self.host
        return (self.host, self.port)

    @property
    def text(self) -> str:
        """The address as nginx prints it: ``127.0.0.1:993``, ``[::1]:993``, ``unix:/p``."""
        if self.family == socket.AF_UNIX:
            return f"unix:{self.host}"
        if self.family == socket.AF_INET6:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class LogTarget:
    """One ``error_log`` target: a file path, ``stderr``, ``syslog:...`` or ``memory:...``."""

    target: str
    level: str = "error"  # debug info notice warn error crit alert emerg


class AccessLogFormat(enum.Enum):
    """The ``access_log`` formats (see :mod:`mailgate.config.observability`)."""

    MAIN = "main"
    JSON = "json"


@dataclass(frozen=True, slots=True)
class AccessLog:
    """One ``access_log PATH [FORMAT]``: a file (absolute) and its line format."""

    path: str
    format: AccessLogFormat = AccessLogFormat.MAIN


@dataclass(frozen=True, slots=True)
class MetricsListen:
    """``metrics_listen``: the TCP address of the Prometheus scrape endpoint."""

    family: socket.AddressFamily
    host: str
    port: int
    source: Source

    @property
    def text(self) -> str:
        if self.family == socket.AF_INET6:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Syslog:
    """``error_log syslog:server=ADDR[:PORT][,facility=][,severity=][,tag=][,nohostname]``."""

    family: socket.AddressFamily  # AF_INET, AF_INET6, or AF_UNIX for ``server=unix:/dev/log``
    host: str  # the IP, or the socket path
    port: int  # 514 unless given; 0 for unix
    facility: int = 23  # local7, as nginx
    severity: int | None = None  # None: from each message's level
    tag: str = "mailgate"
    hostname: bool = True  # ``nohostname`` leaves the HOSTNAME field out


@dataclass(frozen=True, slots=True)
class SessionCache:
    """``ssl_session_cache off | none | [builtin[:size]] [shared:name:size]``."""

    off: bool = False
    builtin: bool = False
    builtin_size: int = 20480  # sessions
    shared_name: str | None = None
    shared_size: int = 0  # bytes


@dataclass(frozen=True, slots=True)
class ConfCommand:
    """One ``ssl_conf_command``: an OpenSSL ``SSL_CONF_cmd`` name and value.

    Whether the value names a file or a folder only OpenSSL knows (``SSL_CONF_cmd_value_type``),
    so the TLS layer asks it, as nginx does, and then resolves the value against
    ``conf_prefix`` like every other file mailgate reads.
    """

    name: str
    value: str
    conf_prefix: str  # the main configuration file's folder
    source: Source


@dataclass(frozen=True, slots=True)
class HttpURL:
    """An ``auth_http`` URL: ``[http://]host[:port][/uri]`` or ``unix:/path[:/uri]``."""

    host: str  # the resolved IP, or "" for unix sockets
    port: int
    uri: str
    host_header: str  # the URL host without port, "localhost" for unix sockets
    unix_path: str | None = None
    text: str = ""  # as written, for messages


@dataclass(frozen=True, slots=True)
class Address:
    """A host:port target such as ``proxy_pass`` (an IP, resolved at parse time)."""

    host: str
    port: int
    family: socket.AddressFamily = socket.AF_INET


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """One ``server {}`` block, every directive merged with the ``mail {}`` level and defaults."""

    source: Source
    listens: tuple[Listen, ...]
    protocol: Protocol

    # ngx_mail_core_module
    timeout: float = 60.0
    server_name: str = field(default_factory=socket.gethostname)
    error_log: tuple[LogTarget, ...] = ()  # empty: the main-level error_log
    resolver: tuple[str, ...] = ()  # empty: resolver off
    resolver_valid: float | None = None
    resolver_ipv4: bool = True
    resolver_ipv6: bool = True
    resolver_timeout: float = 30.0
    max_errors: int = 5
    access_log: tuple[AccessLog, ...] = ()  # empty: off (the default, as nginx's mail has none)

    # ngx_mail_ssl_module
    starttls: StartTLS = StartTLS.OFF
    ssl_certificate: tuple[str, ...] = ()
    ssl_certificate_key: tuple[str, ...] = ()
    ssl_password_file: str | None = None
    ssl_certificate_compression: bool = False
    ssl_dhparam: str | None = None
    ssl_ecdh_curve: str = "auto"
    ssl_protocols: tuple[str, ...] = ("TLSv1.2", "TLSv1.3")
    ssl_ciphers: str = "HIGH:!aNULL:!MD5"
    ssl_prefer_server_ciphers: bool = False
    ssl_session_cache: SessionCache = SessionCache()
    ssl_session_tickets: bool = True
    ssl_session_ticket_key: tuple[str, ...] = ()
    ssl_session_timeout: float = 300.0
    ssl_verify_client: VerifyClient = VerifyClient.OFF
    ssl_verify_depth: int = 1
    ssl_client_certificate: str | None = None
    ssl_trusted_certificate: str | None = None
    ssl_crl: str | None = None
    ssl_conf_command: tuple[ConfCommand, ...] = ()

    # ngx_mail_auth_http_module
    auth_http: HttpURL | None = None
    auth_http_timeout: float = 60.0
    auth_http_header: tuple[tuple[str, str], ...] = ()
    auth_http_pass_client_cert: bool = False
    # Beyond nginx: route every login to one backend with no auth server.
    proxy_pass: Address | None = None

    # ngx_mail_proxy_module
    proxy: bool = False
    proxy_buffer: int = 4096
    proxy_timeout: float = 86400.0
    proxy_pass_error_message: bool = False
    xclient: bool = True
    proxy_smtp_auth: bool = False
    proxy_protocol: ProxyProtocolOut = ProxyProtocolOut.OFF

    # ngx_mail_imap_module
    imap_client_buffer: int = 4096
    imap_capabilities: tuple[str, ...] = ("IMAP4", "IMAP4rev1", "UIDPLUS")
    imap_auth: tuple[str, ...] = ("plain",)

    # ngx_mail_pop3_module
    pop3_capabilities: tuple[str, ...] = ("TOP", "USER", "UIDL")
    pop3_auth: tuple[str, ...] = ("plain",)

    # ngx_mail_smtp_module
    smtp_client_buffer: int = 4096
    smtp_greeting_delay: float = 0.0
    smtp_capabilities: tuple[str, ...] = ()
    smtp_auth: tuple[str, ...] = ("plain", "login")

    # ngx_mail_realip_module
    set_real_ip_from: tuple[IPNetwork | str, ...] = ()  # "unix:" for unix-socket peers

    @property
    def tls_enabled(self) -> bool:
        """A TLS context is built only for implicit-TLS listeners or STARTTLS (as nginx)."""
        return self.starttls is not StartTLS.OFF or any(lst.ssl for lst in self.listens)


@dataclass(frozen=True, slots=True)
class MainConfig:
    """The main and ``events {}`` directives that mailgate honours."""

    worker_processes: int = 1  # ``auto`` already resolved to the usable CPU count
    worker_processes_auto: bool = False
    worker_connections: int = 512
    multi_accept: bool = False  # accept every pending connection per readiness event, or one
    worker_rlimit_nofile: int | None = None
    worker_shutdown_timeout: float | None = None
    daemon: bool = True
    master_process: bool = True
    pid: str | None = None  # absolute path; None means ``pid off``
    error_log: tuple[LogTarget, ...] = ()
    user: tuple[str, str | None] | None = None  # (user, group)
    env: tuple[tuple[str, str | None], ...] = ()  # (name, value or None to keep the inherited)
    metrics_listen: MetricsListen | None = None  # None: no scrape endpoint (the default)


@dataclass(frozen=True, slots=True)
class ConfigFile:
    """A file that was read, with its text, for ``mailgate -T``."""

    path: str
    text: str


@dataclass(frozen=True, slots=True)
class Config:
    """A whole, validated configuration generation."""

    path: str
    prefix: str
    main: MainConfig
    servers: tuple[ServerConfig, ...]
    files: tuple[ConfigFile, ...] = ()
    warnings: tuple[str, ...] = ()  # "[warn]"-level messages, each ending in " in FILE:LINE"

    @property
    def listens(self) -> tuple[Listen, ...]:
        """Every listening address of every server, in config order."""
        return tuple(lst for srv in self.servers for lst in srv.listens)
