"""Process titles as nginx shows them in ``ps``: ``mailgate: master process ...``.

Imported first by the command line: setproctitle must read the original title before anything
edits ``os.environ`` (gunicorn issue #3430), because it may move the environment block to make
room for a longer title.
"""

from __future__ import annotations

import setproctitle as _setproctitle

_ORIGINAL_TITLE = _setproctitle.getproctitle()


def set_title(title: str) -> None:
    """Show ``title`` in ``ps`` and ``/proc/PID/cmdline``."""
    _setproctitle.setproctitle(title)
