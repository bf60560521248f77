from django.urls import path

from profiles import views

app_name = "profiles"
urlpatterns = [
    path("", views.profile_list, name="list"),
    path("<uuid:profile_id>/", views.profile_detail, name="detail"),
    path("imports/", views.imports_home, name="imports"),
]
