"""A Django site with ``django.contrib.auth``'s own views and ``sqreen.integrations.django.auth``
(``SQREEN_TEST_DB``: its SQLite file)."""
