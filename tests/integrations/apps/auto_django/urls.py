from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("login", views.login),
    path("identify", views.identify),
    path("layers", views.layers),
]
