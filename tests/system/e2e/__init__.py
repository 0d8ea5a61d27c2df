"""End to end: both planes as processes, the fake provider, and the official SDKs."""
