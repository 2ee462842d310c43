"""The dataset tests (a package: see conftest.py)."""
