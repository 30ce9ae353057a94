import os

from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_safe

from notes.models import Note


@require_safe
def index(request: HttpRequest) -> JsonResponse:
    """Tiny page that really touches the ``notes_note`` table (so it fails if migrations did not run)."""
    return JsonResponse(
        {
            "app": "practika",
            "version": os.environ.get("APP_VERSION") or "unknown",
            "notes": Note.objects.count(),
        }
    )
