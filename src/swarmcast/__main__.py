"""``python -m swarmcast``: the same as the ``swarmcast`` command."""

import sys

from swarmcast.cli import main

sys.exit(main())
