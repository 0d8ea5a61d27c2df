"""One module per resource group; each exposes ``register(subparsers, common)``."""
