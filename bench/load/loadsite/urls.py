"""The four measured views and the probe."""

from __future__ import annotations

from django.urls import path

from loadsite import views

urlpatterns = [
    path("json/", views.async_json),
    path("orm/", views.async_orm),
    path("template/", views.async_template),
    path("sync/", views.sync_json),
    path("probe/", views.probe),
]
