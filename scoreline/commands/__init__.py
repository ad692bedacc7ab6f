"""One module per ``scoreline`` sub-command; each exposes ``register(subparsers)``."""
