"""``python -m transport.daemon``: the ``hostvisor`` command (see :mod:`transport.daemon._cli`)."""

import sys

from ._cli import main

sys.exit(main())
