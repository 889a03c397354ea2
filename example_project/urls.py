"""URLs of the example project."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.staticfiles.urls import staticfiles_urlpatterns
from django.urls import include, path

from example_project import views

urlpatterns = [
    path("", views.home, name="home"),
    path("runs/<str:run_id>/", views.run_detail, name="run"),
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("trigger/", include("trigger_django.urls")),
    path("admin/", admin.site.urls),
]

# daphne serves no static files itself; with DEBUG on, Django does (the demo and the e2e tests).
urlpatterns += staticfiles_urlpatterns()
