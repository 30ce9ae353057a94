from django.urls import path
from notes.views import index

from practika.health import health

urlpatterns = [
    path("", index, name="index"),
    path("health/", health, name="health"),
]
