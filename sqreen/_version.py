__version__ = "0.1.0"
# As pyproject.toml's ``authors`` (tests/test_api.py holds them equal); it gives no address.
__author__ = "sqreen-sdk contributors"
__email__ = ""
