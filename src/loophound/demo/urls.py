"""Routes of the demo project."""

from __future__ import annotations

from django.urls import path

from loophound.demo import views

BLOCKING = {
    "blocking/sleep/": views.blocking_sleep,
    "blocking/file/": views.blocking_file,
    "blocking/cpu/": views.blocking_cpu,
    "blocking/json/": views.blocking_json,
    "blocking/subprocess/": views.blocking_subprocess,
    "blocking/items/<int:pk>/": views.blocking_item,
    "blocking/orm/": views.blocking_orm,
}
CLEAN = {
    "clean/async/": views.clean_async,
    "clean/thread/": views.clean_thread,
    "clean/orm/": views.clean_orm,
    "clean/sync/": views.clean_sync,
}

urlpatterns = [path(route, view) for route, view in {**BLOCKING, **CLEAN}.items()]
