"""Repository-wide pytest set-up.

The lessons run in the test-suite (tests/test_notebooks.py) with small parameters: their `parameters` cell reads
E2VPT_NOTEBOOK_SMOKE and then trains a couple of epochs on the offline starter instead of the full schedule.
"""
import os

os.environ.setdefault("E2VPT_NOTEBOOK_SMOKE", "1")
