"""The routed tests' fixture: the attempt loop served over a scripted fake transport (``harness.py``)."""

from tests.data_plane.routed.harness import serve

__all__ = ["serve"]
