"""Navigation shown in the base layout: only the sections the user's role may open."""

from django.urls import reverse

SECTIONS = [
    ("Profiles", "profiles:list", "profiles.browse"),
    ("Imports", "profiles:imports", "profiles.browse_imports"),
    ("Segments", "segments:list", "segments.browse"),
    ("Content", "content:blocks", "content.browse"),
    ("Experiments", "content:experiments", "content.browse"),
    ("Consent", "consent:home", "consent.browse"),
]


def navigation(request):
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"nav_sections": []}
    current = request.path
    items = []
    for label, url_name, permission in SECTIONS:
        if user.has_perm(permission):
            url = reverse(url_name)
            items.append({"label": label, "url": url, "active": current.startswith(url)})
    return {"nav_sections": items}
