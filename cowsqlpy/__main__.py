"""``python -m cowsqlpy node ...`` runs a node; ``python -m cowsqlpy shell ...`` the SQL shell."""

import sys

from .cli import main

sys.exit(main())
