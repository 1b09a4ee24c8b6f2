"""``python -m mailgate.master.metrics --fd N``: the metrics process (see :mod:`.endpoint`)."""

import sys

from mailgate.master.metrics.endpoint import main

sys.exit(main())
