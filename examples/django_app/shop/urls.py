from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("", views.index),
    path("signup", views.signup),
    path("login", views.login),
    path("export", views.export),
]
