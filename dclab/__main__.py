"""``python -m dclab`` runs the command line."""

import sys

from dclab.cli import main

sys.exit(main())
