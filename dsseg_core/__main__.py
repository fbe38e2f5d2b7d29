"""``python -m dsseg_core`` runs the ``dsseg`` CLI."""

import sys

from dsseg_core.cli import main

sys.exit(main())
