"""``python -m e2vpt_viz``: the command line of the experiment platform (:mod:`e2vpt_viz.experiments.cli`)."""
import sys

from .experiments.cli import main

sys.exit(main())
