"""pytest fixtures shared by the tests (none yet). Shared helper functions and constants live
in ``tests/helpers.py`` and are imported from there, never from this file."""
