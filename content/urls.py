from django.urls import path

from content import views

app_name = "content"
urlpatterns = [
    path("", views.block_list, name="blocks"),
    path("experiments/", views.experiment_list, name="experiments"),
]
