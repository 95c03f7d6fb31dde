"""``python -m supervisor``: see :mod:`supervisor._cli`."""

import sys

from ._cli import main

sys.exit(main())
