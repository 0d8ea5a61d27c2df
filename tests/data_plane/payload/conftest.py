"""Payload tests (data_plane/payload/): pure functions, no servers or fixtures needed."""
