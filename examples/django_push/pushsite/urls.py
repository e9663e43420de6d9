from django.urls import path
from notes import views

urlpatterns = [
    path("", views.index, name="index"),
    path("notes", views.add_note, name="add_note"),
    path("notes.json", views.notes_json, name="notes_json"),
    path("live", views.live, name="live"),
]
