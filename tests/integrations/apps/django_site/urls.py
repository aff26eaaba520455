from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("echo/<str:name>", views.echo),
    path("form", views.form),
    path("identify", views.identify),
    path("guarded", views.guarded),
    path("count", views.count),
    path("barrier", views.barrier),
    path("abarrier", views.abarrier),
    path("async/<int:item>", views.async_view),
    path("stream/<str:n>", views.stream),
    path("astream/<str:n>", views.astream),
]
