"""Django's own logins tracked with no code: ``"sqreen.integrations.django.auth"`` in
``INSTALLED_APPS``.

::

    INSTALLED_APPS = [..., "django.contrib.auth", "sqreen.integrations.django.auth"]

Every login ``django.contrib.auth`` makes (``LoginView``, the admin's, ``login()`` in a view
of yours), every failed ``authenticate()`` and every logout is tracked, from its signals, as
:func:`sqreen.auth_track` and ``sqreen.track("auth.logout")`` would: ``auth.login.success``
(and the user identified: a blocked user's login is answered 403), ``auth.login.failure``
and ``auth.logout``, each with ``{"username": <the USERNAME_FIELD's value>}``, the same
for a success and the failures before it, as the built-in playbooks group them. A failure
whose credentials name no username is tracked without a user (it still counts for its IP).
List :class:`~.backends.BlockedUsersBackend` first in ``AUTHENTICATION_BACKENDS`` to
refuse a blocked user before any password is checked. Only requests the middleware serves
are tracked: ``Client.login()`` and ``force_login()`` in
an app's tests make none. Install it *instead of* calling ``auth_track`` for the same logins
(both would count each login twice).

.. versionadded:: 0.1
"""
