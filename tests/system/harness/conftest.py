"""The test harness itself: plane start/stop helpers and the session reaper (``tests/support/spawn.py``)."""
