"""The ``mailgate`` command: nginx's command line in front of the master process.

Every message goes to stderr prefixed ``mailgate: `` as nginx's go with ``nginx: ``;
only ``-T`` writes to stdout (the configuration dump).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mailgate.config import loader, model
from mailgate.config.errors import ConfigError
from mailgate.master import about, files, options, pidfile, signals
from mailgate.master.log import STDERR, ErrorLog, Level, LogOpenError, console_line, os_error
from mailgate.worker.tls import native
from mailgate.worker.tls.errors import TLSConfigError

if TYPE_CHECKING:  # imported at run time only after native.check(), in Paths.build()
    from mailgate.worker.tls.context import Contexts

# A parsed configuration and its TLS contexts (per index into config.servers): what a
# generation is built from, before generation.prepare() binds its listeners and makes it a
# master.generation.Generation.
BuiltConfig = tuple[model.Config, "Contexts"]


@dataclass(frozen=True, slots=True)
class Paths:
    """Where the configuration comes from: file, prefix and ``-g`` directives."""

    conf: str
    prefix: str
    directives: str | None

    @classmethod
    def from_options(cls, opts: options.Options) -> Paths:
        # -c is relative to the cwd (nginx: to the prefix); the prefix defaults to its folder.
        conf = os.path.abspath(opts.conf_file or options.DEFAULT_CONF)
        prefix = os.path.abspath(opts.prefix) if opts.prefix else os.path.dirname(conf)
        return cls(conf, prefix, opts.directives)

    def parse(self) -> model.Config:
        return loader.load(self.conf, prefix=self.prefix, extra=self.directives)

    def build(self, config: model.Config | None = None) -> BuiltConfig:
        """Parse (unless given ``config``), check the user and access logs, check the
        libssl, build TLS contexts; raises on the first error."""
        config = config or self.parse()
        files.check(config)
        native.check()
        # Imported only now: with a foreign pyOpenSSL/cryptography these modules may not even
        # import, and the admin must see the check's message rather than a traceback.
        from mailgate.master import zones
        from mailgate.worker.tls import context

        zones.prepare(config)  # shared session zones, before the contexts that use them
        return config, context.build_contexts(config)


_BUILD_ERRORS = (ConfigError, files.FileCheckError, native.LibsslMismatch, TLSConfigError)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mailgate`` script; returns the exit status."""
    try:
        opts = options.parse(sys.argv[1:] if argv is None else argv)
    except options.OptionError as err:
        _say(str(err))
        return 1
    if opts.version:
        _show_version(opts)
        if not opts.test:
            return 0
    paths = Paths.from_options(opts)
    try:
        early = ErrorLog([(opts.error_log, Level.NOTICE)] if opts.error_log else [])
    except LogOpenError as err:
        _say_emerg(str(err))
        if opts.test:
            _say(f"configuration file {paths.conf} test failed")
        return 1
    try:
        return _run(opts, paths, early)
    except OSError as err:
        # A last guard: whatever the checks above missed is still one line, not a traceback.
        where = f' "{err.filename}"' if err.filename else ""
        early.emerg(f"start-up failed{where} ({os_error(err)})")
        return 1


def _run(opts: options.Options, paths: Paths, early: ErrorLog) -> int:
    if opts.signal:
        return send_signal(paths, opts.signal, early)
    if opts.test:
        return test(paths, early, quiet=opts.quiet, dump=opts.dump, default_log=opts.error_log)
    from mailgate.master.metrics import MetricsError
    from mailgate.master.metrics import directory as metrics_directory

    try:
        config = paths.parse()
        # Before anything imports prometheus_client: its value class is chosen at import.
        metrics_directory.prepare_environment(config.main.metrics_listen, files.worker_uid(config))
    except (ConfigError, MetricsError) as err:
        early.emerg(str(err))
        return 1
    generation = _build(paths, early, config)
    if generation is None:
        return 1
    config, contexts = generation
    from mailgate.master import boot

    return boot.start(
        config,
        contexts,
        reload=lambda: _rebuild(paths),
        early=early,
        early_log=opts.error_log or STDERR,
    )


def test(
    paths: Paths, log: ErrorLog, *, quiet: bool, dump: bool, default_log: str | None = None
) -> int:
    """``-t``/``-T``: check the configuration as a start would, print nginx's verdict.

    As ``nginx -t``, the error log is opened too (a missing folder fails the test); ports
    are not bound and the pid file is not written.
    """
    generation = _build(paths, log)
    if generation is not None:
        try:
            ErrorLog.from_config(generation[0].main.error_log, default_log or STDERR).close()
        except LogOpenError as err:
            log.emerg(str(err))
            generation = None
    if generation is None:
        _say(f"configuration file {paths.conf} test failed")
        return 1
    if not quiet:
        _say(f"the configuration file {paths.conf} syntax is ok")
        _say(f"configuration file {paths.conf} test is successful")
    if dump:
        for file in generation[0].files:
            sys.stdout.write(f"# configuration file {file.path}:\n{file.text}\n")
        sys.stdout.flush()
    return 0


def send_signal(paths: Paths, action: str, log: ErrorLog) -> int:
    """``-s``: read the pid file the configuration names and signal that master."""
    try:
        config = paths.parse()
    except ConfigError as err:
        log.emerg(str(err))
        return 1
    if config.main.pid is None:
        log.error('"pid off" is set, there is no pid file to read')
        return 1
    try:
        pid = pidfile.read(config.main.pid)
    except pidfile.PidFileError as err:
        log.error(str(err))
        return 1
    signo = signals.ACTIONS[action]
    try:
        os.kill(pid, signo)
    except OSError as err:
        log.alert(f"kill({pid}, {int(signo)}) failed ({os_error(err)})")
        return 1
    return 0


def _build(paths: Paths, log: ErrorLog, parsed: model.Config | None = None) -> BuiltConfig | None:
    try:
        config, contexts = paths.build(parsed)
    except _BUILD_ERRORS as err:
        log.emerg(str(err))
        return None
    for warning in config.warnings:
        log.warn(warning)
    return config, contexts


def _rebuild(paths: Paths) -> BuiltConfig:
    # For HUP: the arbiter logs the error and keeps the running generation.
    try:
        return paths.build()
    except _BUILD_ERRORS as err:
        from mailgate.master.arbiter import ReloadError

        raise ReloadError(str(err)) from err


def _show_version(opts: options.Options) -> None:
    text = about.version_text()
    if opts.help:
        text += options.USAGE
    if opts.build:
        text += about.build_text()
    sys.stderr.write(text)
    sys.stderr.flush()


def _say_emerg(message: str) -> None:
    sys.stderr.write(console_line(Level.EMERG, message))
    sys.stderr.flush()


def _say(message: str) -> None:
    sys.stderr.write(f"mailgate: {message}\n")
    sys.stderr.flush()
