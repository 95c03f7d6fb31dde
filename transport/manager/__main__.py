"""``python -m transport.manager``: the ``hostvisor-manager`` command (see ``_cli``)."""

import sys

from ._cli import main

sys.exit(main())
