"""``python -m sqreen.server`` is ``sqreen``."""

from ._entry import main

main()
