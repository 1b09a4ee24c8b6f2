"""``python -m mailgate.master``: the same entry point as the ``mailgate`` console script."""

from mailgate.master.cli import main

raise SystemExit(main())
