from django.urls import path

from profiles import views

app_name = "profiles"
urlpatterns = [
    path("", views.profile_list, name="list"),
    path("<uuid:profile_id>/", views.profile_detail, name="detail"),
    path("imports/", views.imports_home, name="imports"),
    # identity resolution
    path("<uuid:profile_id>/links/<int:link_id>/unmerge/", views.profile_unmerge, name="unmerge"),
    path("identity/why/", views.identity_why, name="why"),
    path("identity/flags/", views.identity_flags, name="flags"),
    path("identity/flags/<int:flag_id>/link/", views.identity_flag_decide, {"decision": "link"}, name="flag_link"),
    path("identity/flags/<int:flag_id>/dismiss/", views.identity_flag_decide, {"decision": "dismiss"},
         name="flag_dismiss"),
    path("identity/blocked/", views.identity_blocked, name="blocked"),
    path("identity/blocked/<int:blocked_id>/toggle/", views.identity_blocked_toggle, name="blocked_toggle"),
    path("identity/unattributed/requeue/", views.identity_unattributed_requeue, name="unattributed_requeue"),
]
