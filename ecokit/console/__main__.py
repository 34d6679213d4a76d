"""``python -m ecokit.console <console.json>``: run the fleet console."""

import sys

from ecokit.console.service import main

sys.exit(main())
