"""One module per framework: :mod:`.flask`, :mod:`.django`, :mod:`.fastapi` (and
:mod:`.starlette`). Each raises :class:`ImportError` naming the extra to install when its
framework is missing.
"""
