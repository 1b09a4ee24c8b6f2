"""The metrics schema: every Prometheus family, and the small API that counts into them.

Every process writes into ``PROMETHEUS_MULTIPROC_DIR``. A worker's per-connection writes are
deferred and batched by :mod:`mailgate.worker.observe.batching`; the master's own events
(restarts, reloads, upgrades, build info) are in :mod:`mailgate.master.metrics.events`.

prometheus_client picks its value class when it is first imported, so it is imported here only
when the first metric is made (:func:`families`), never at module import: the master sets the
directory (``mailgate.master.metrics.directory.prepare_environment``) after parsing its
command line, and importing this module earlier must not freeze the choice. Each process
writes its own files; the metrics process sums them per scrape. Gauges say how to combine processes
(``multiprocess_mode``); there is no ``pid`` label, no Info/Enum.

Per-connection cost: a session holds a :class:`ListenerMetrics` made once per listener, whose
label children are bound once and then looked up by a tuple of existing strings, so an event
is a dict lookup and an ``inc()``, with no string formatting.

Metric names (all counters end in ``_total`` on the wire):

    mailgate_connections_accepted_total{server,protocol}
    mailgate_connections_active{server,protocol}                     gauge, livesum
    mailgate_sessions_total{server,protocol,reason}
    mailgate_tls_handshakes_total{server,result,version,kind}        result ok|failed
    mailgate_tls_handshake_duration_seconds{kind}                    histogram
    mailgate_ssl_session_cache_{lookups,hits,misses,stores,evictions}_total{zone}
    mailgate_ssl_session_cache_entries{zone}, _bytes{zone}           gauge, mostrecent
    mailgate_ssl_ticket_key_rotations_total{zone}
    mailgate_ssl_tickets_previous_key_total{zone}
    mailgate_shm_errors_total{zone,op}                  op lookup|store|remove|usage|ticket_keys
    mailgate_auth_http_requests_total{outcome}                       ok|fail|wait|invalid|error
    mailgate_auth_http_duration_seconds                              histogram
    mailgate_logins_total{protocol,mechanism,outcome}                ok|failed|error
    mailgate_backend_connect_failures_total{protocol}
    mailgate_relayed_bytes_total{protocol,direction}                 to_backend|to_client
    mailgate_worker_processes                                        gauge, livesum
    mailgate_worker_last_start_time_seconds                          gauge, mostrecent
    mailgate_worker_restarts_total
    mailgate_reloads_total{result}, mailgate_upgrades_total{result}  ok|failed
    mailgate_build_info{version,python,openssl}                      gauge (1), livemax
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from mailgate.worker.observe import batching

if TYPE_CHECKING:
    from prometheus_client import Counter, Gauge
    from prometheus_client.metrics import MetricWrapperBase

_Family = TypeVar("_Family", bound="MetricWrapperBase")

HANDSHAKE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
AUTH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
OK, FAILED, ERROR = "ok", "failed", "error"
TO_BACKEND, TO_CLIENT = "to_backend", "to_client"


class Families:
    """Every metric family, made once per process (registered nowhere: the files are the
    registry in multiprocess mode, and tests may make a second set)."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, labels, registry=None)

        def gauge(name: str, doc: str, labels: tuple[str, ...], mode: str) -> Gauge:
            return Gauge(name, doc, labels, registry=None, multiprocess_mode=mode)  # type: ignore[arg-type]

        by_listener = ("server", "protocol")
        self.accepted = counter(
            "mailgate_connections_accepted", "Client connections accepted.", by_listener
        )
        self.active = gauge(
            "mailgate_connections_active", "Client connections open now.", by_listener, "livesum"
        )
        self.sessions = counter(
            "mailgate_sessions", "Client sessions ended, by close reason.", (*by_listener, "reason")
        )
        self.handshakes = counter(
            "mailgate_tls_handshakes",
            "TLS handshakes by result, protocol version and kind (full, session_id, ticket).",
            ("server", "result", "version", "kind"),
        )
        self.handshake_seconds = Histogram(
            "mailgate_tls_handshake_duration_seconds",
            "Time from the start of a TLS handshake to its end.",
            ("kind",),
            buckets=HANDSHAKE_BUCKETS,
            registry=None,
        )
        zone = ("zone",)
        self.cache_lookups = counter(
            "mailgate_ssl_session_cache_lookups", "Session cache lookups.", zone
        )
        self.cache_hits = counter("mailgate_ssl_session_cache_hits", "Session cache hits.", zone)
        self.cache_misses = counter(
            "mailgate_ssl_session_cache_misses", "Session cache misses.", zone
        )
        self.cache_stores = counter(
            "mailgate_ssl_session_cache_stores", "Sessions stored in the cache.", zone
        )
        self.cache_evictions = counter(
            "mailgate_ssl_session_cache_evictions",
            "Sessions evicted from the cache to make room.",
            zone,
        )
        # One shared zone seen by every worker: the latest reading is the truth.
        self.cache_entries = gauge(
            "mailgate_ssl_session_cache_entries", "Sessions in the cache.", zone, "mostrecent"
        )
        self.cache_bytes = gauge(
            "mailgate_ssl_session_cache_bytes", "Bytes used in the cache zone.", zone, "mostrecent"
        )
        self.key_rotations = counter(
            "mailgate_ssl_ticket_key_rotations", "Session ticket key rotations.", zone
        )
        self.previous_key = counter(
            "mailgate_ssl_tickets_previous_key",
            "Session tickets accepted under a previous (not the current) key.",
            zone,
        )
        self.shm_errors = counter(
            "mailgate_shm_errors",
            "Shared zone operations that failed (the zone's lock could not be taken).",
            ("zone", "op"),
        )
        self.auth_requests = counter(
            "mailgate_auth_http_requests", "auth_http requests by outcome.", ("outcome",)
        )
        self.auth_seconds = Histogram(
            "mailgate_auth_http_duration_seconds",
            "Time from sending an auth_http request to its answer.",
            buckets=AUTH_BUCKETS,
            registry=None,
        )
        self.logins = counter(
            "mailgate_logins",
            "Login attempts by protocol, mechanism and outcome.",
            ("protocol", "mechanism", "outcome"),
        )
        self.backend_failures = counter(
            "mailgate_backend_connect_failures",
            "Backend connections that failed or timed out.",
            ("protocol",),
        )
        self.relayed = counter(
            "mailgate_relayed_bytes",
            "Bytes relayed after login, each way.",
            ("protocol", "direction"),
        )
        self.workers = gauge(
            "mailgate_worker_processes", "Worker processes running.", (), "livesum"
        )
        self.last_start = gauge(
            "mailgate_worker_last_start_time_seconds",
            "When the newest worker process started (Unix time).",
            (),
            "mostrecent",
        )
        self.worker_restarts = counter(
            "mailgate_worker_restarts", "Worker processes respawned after an unexpected exit."
        )
        self.reloads = counter("mailgate_reloads", "Configuration reloads (HUP).", ("result",))
        self.upgrades = counter("mailgate_upgrades", "Binary upgrades (USR2).", ("result",))
        self.build_info = gauge(
            "mailgate_build_info",
            "mailgate's version and what it runs on; always 1.",
            ("version", "python", "openssl"),
            "livemax",
        )


_families: Families | None = None


def families() -> Families:
    """This process's metric families, made (and prometheus_client imported) on first use."""
    global _families
    if _families is None:
        _families = Families()
    return _families


class _Children(Generic[_Family]):
    """Label children of one family for fixed leading labels, bound on first use."""

    __slots__ = ("_bound", "_family", "_fixed")

    def __init__(self, family: _Family, *fixed: str) -> None:
        self._family = family
        self._fixed = fixed
        self._bound: dict[tuple[str, ...], _Family] = {}

    def get(self, *rest: str) -> _Family:
        child = self._bound.get(rest)
        if child is None:
            child = self._bound[rest] = self._family.labels(*self._fixed, *rest)
        return child


class ListenerMetrics:
    """What one listener's sessions count; one per listen address and protocol."""

    __slots__ = (
        "_accepted",
        "_active",
        "_backend_failures",
        "_handshakes",
        "_logins",
        "_relay_in",
        "_relay_out",
        "_sessions",
        "_timings",
    )

    def __init__(self, server: str, protocol: str) -> None:
        fam = families()
        self._accepted = batching.AtOnce(fam.accepted.labels(server, protocol))
        self._active = fam.active.labels(server, protocol)
        self._sessions = _Children(fam.sessions, server, protocol)
        self._handshakes = _Children(fam.handshakes, server)
        self._timings = _Children(fam.handshake_seconds)
        self._logins = _Children(fam.logins, protocol)
        self._backend_failures = fam.backend_failures.labels(protocol)
        self._relay_in = fam.relayed.labels(protocol, TO_BACKEND)
        self._relay_out = fam.relayed.labels(protocol, TO_CLIENT)

    def accepted(self) -> None:
        # At once, unlike the other events: a scrape then counts a session as begun before any
        # of its deferred events, and accepted minus ended is the sessions in flight (the
        # observability tests wait on that to know a scrape is settled).
        self._accepted.inc()
        batching.inc(self._active)

    def closed(self, reason: str) -> None:
        batching.inc(self._active, -1.0)
        batching.inc_last(self._sessions.get(reason))

    def handshake(self, ok: bool, version: str, kind: str, seconds: float | None) -> None:
        """One handshake ended; ``kind`` is ``full``, ``session_id`` or ``ticket``."""
        batching.inc(self._handshakes.get(OK if ok else FAILED, version, kind))
        if ok and seconds is not None:
            batching.observe(self._timings.get(kind), seconds)

    def login(self, mechanism: str, outcome: str) -> None:
        batching.inc(self._logins.get(mechanism, outcome))

    def backend_connect_failed(self) -> None:
        batching.inc(self._backend_failures)

    def relayed(self, to_backend: int, to_client: int) -> None:
        if to_backend:
            batching.inc(self._relay_in, to_backend)
        if to_client:
            batching.inc(self._relay_out, to_client)


_listeners: dict[tuple[str, str], ListenerMetrics] = {}


def for_listener(server: str, protocol: str) -> ListenerMetrics:
    """The (cached) metrics of the listener ``server`` (its address text) and ``protocol``."""
    key = (server, protocol)
    found = _listeners.get(key)
    if found is None:
        found = _listeners[key] = ListenerMetrics(server, protocol)
    return found


_auth_outcomes: dict[str, Counter] = {}


def auth_http(outcome: str, seconds: float) -> None:
    """One auth_http request answered (``ok``, ``fail``, ``wait``, ``invalid``) or not
    (``error``)."""
    fam = families()
    child = _auth_outcomes.get(outcome)
    if child is None:
        child = _auth_outcomes[outcome] = fam.auth_requests.labels(outcome)
    batching.inc(child)
    batching.observe(fam.auth_seconds, seconds)


# -- shared session cache and ticket keys (called by the shm/TLS code) ------------------------
#
# Written at once, not through the deferred writes of :mod:`batching`: they predate it, and
# deferring them would change when they reach the files (by up to a second), which this
# restructuring must not do. They are per handshake at most, not per command.

_zones: dict[tuple[str, str], Any] = {}


def _zone(family: str, zone: str) -> Any:
    key = (family, zone)
    child = _zones.get(key)
    if child is None:
        child = _zones[key] = getattr(families(), family).labels(zone)
    return child


def session_cache_lookup(zone: str, hit: bool) -> None:
    """A session ID was looked up in ``zone``; counts the lookup and the hit or miss."""
    _zone("cache_lookups", zone).inc()
    _zone("cache_hits" if hit else "cache_misses", zone).inc()


def session_cache_store(zone: str) -> None:
    _zone("cache_stores", zone).inc()


def session_cache_evicted(zone: str, count: int = 1) -> None:
    """``count`` sessions were pushed out of ``zone`` to make room (not expiry)."""
    _zone("cache_evictions", zone).inc(count)


def session_cache_usage(zone: str, entries: int, used_bytes: int) -> None:
    """The zone now holds ``entries`` sessions in ``used_bytes`` bytes."""
    _zone("cache_entries", zone).set(entries)
    _zone("cache_bytes", zone).set(used_bytes)


def ticket_key_rotated(zone: str) -> None:
    """A new ticket key became current in ``zone`` (``"files"`` for key files)."""
    _zone("key_rotations", zone).inc()


def ticket_previous_key(zone: str) -> None:
    """A ticket sealed under a previous key was accepted (and renewed)."""
    _zone("previous_key", zone).inc()


def shm_error(zone: str, op: str) -> None:
    """An operation ``op`` on shared zone ``zone`` failed (written at once: it is rare)."""
    families().shm_errors.labels(zone, op).inc()


# -- process lifecycle (the master's events are in mailgate.master.metrics.events) -----------


def process_started() -> None:
    """In a new worker, before it drops privileges: open this process's metric files now.

    The first write after ``fork()`` moves every metric of the process to files named by the
    new pid; doing it here, while still privileged, means a worker running as ``user`` never
    has to create a file in the (master-owned) directory.
    """
    fam = families()
    # The first write moves every metric made so far (counters, histograms, livesum gauges)
    # to this pid's files; the start time opens the one file kind no early metric uses.
    fam.workers.set(1)
    fam.last_start.set(time.time())
