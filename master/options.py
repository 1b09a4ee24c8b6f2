"""nginx's command-line options, parsed as ``ngx_get_options`` does.

Flags may be grouped (``-tq``) and an option's value may be glued to it (``-cfile``) or be
the next argument. Errors are nginx's sentences, e.g. ``invalid option: "x"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mailgate.master import signals

DEFAULT_CONF = "/etc/mailgate/mailgate.conf"

USAGE = """\
Usage: mailgate [-?hvVtTq] [-s signal] [-p prefix]
                [-e filename] [-c filename] [-g directives]

Options:
  -?,-h         : this help
  -v            : show version and exit
  -V            : show version, OpenSSL and modules, then exit
  -t            : test configuration and exit
  -T            : test configuration, dump it and exit
  -q            : suppress non-error messages during configuration testing
  -s signal     : send signal to a master process: stop, quit, reopen, reload
  -p prefix     : set prefix path (default: the configuration file's folder)
  -e filename   : set the error log used before the configuration is read,
                  and when it has no error_log (default: stderr)
  -c filename   : set configuration file (default: /etc/mailgate/mailgate.conf);
                  a relative path is relative to the current directory
  -g directives : set global directives out of configuration file
"""

# Options taking a value, and the noun nginx uses when the value is missing.
_VALUE_NOUNS = {
    "p": "directory name",
    "e": "file name",
    "c": "file name",
    "g": "parameter",
    "s": "parameter",
}


class OptionError(Exception):
    """A bad command line; ``str()`` is the message to print after ``mailgate: ``."""


@dataclass(slots=True)
class Options:
    """What the command line asked for."""

    help: bool = False
    version: bool = False
    build: bool = False  # -V
    test: bool = False
    dump: bool = False
    quiet: bool = False
    signal: str | None = None
    prefix: str | None = None
    conf_file: str | None = None
    error_log: str | None = None
    directives: str | None = None


def parse(argv: Sequence[str]) -> Options:
    """Parse ``argv`` (without the program name) or raise :class:`OptionError`."""
    opts = Options()
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("-"):
            raise OptionError(f'invalid option: "{arg}"')
        pos = 1
        while pos < len(arg):
            letter = arg[pos]
            pos += 1
            if letter in _VALUE_NOUNS:
                if pos < len(arg):
                    value = arg[pos:]
                elif i + 1 < len(argv):
                    i += 1
                    value = argv[i]
                else:
                    raise OptionError(f'option "-{letter}" requires {_VALUE_NOUNS[letter]}')
                _set_value(opts, letter, value)
                break
            _set_flag(opts, letter)
        i += 1
    return opts


def _set_flag(opts: Options, letter: str) -> None:
    if letter in "?h":
        opts.version = opts.help = True
    elif letter == "v":
        opts.version = True
    elif letter == "V":
        opts.version = opts.build = True
    elif letter == "t":
        opts.test = True
    elif letter == "T":
        opts.test = opts.dump = True
    elif letter == "q":
        opts.quiet = True
    else:
        raise OptionError(f'invalid option: "{letter}"')


def _set_value(opts: Options, letter: str, value: str) -> None:
    if letter == "p":
        opts.prefix = value
    elif letter == "e":
        opts.error_log = value
    elif letter == "c":
        opts.conf_file = value
    elif letter == "g":
        opts.directives = value
    elif value in signals.ACTIONS:
        opts.signal = value
    else:
        raise OptionError(f'invalid option: "-s {value}"')
