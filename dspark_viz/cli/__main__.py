"""``python -m dspark_viz.cli``."""
import sys

from dspark_viz.cli import main

sys.exit(main())
