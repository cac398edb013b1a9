"""Repository-wide pytest set-up.

Notebooks run under nbmake in the test-suite with small parameters: their `parameters` cell reads
E2VPT_NOTEBOOK_SMOKE and then trains a couple of epochs on the offline starter instead of the full schedule.
"""
import os

os.environ.setdefault("E2VPT_NOTEBOOK_SMOKE", "1")
