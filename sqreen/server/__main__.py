"""``python -m sqreen.server`` is ``sqreen``."""

from .cli import main

main()
