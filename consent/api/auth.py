"""Authentication of the consent API: a source's write key (HTTP Basic user, as Segment
libraries send it, or `writeKey` in the body) or a staff session (DRF SessionAuthentication,
CSRF-checked)."""

import base64
import binascii

from django.contrib.auth.models import AnonymousUser
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication

from cdp import apikeys
from profiles.models import SourceKey


def raw_key_from(request) -> str:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "basic" and credentials:
        try:
            decoded = base64.b64decode(credentials, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return ""
        return decoded.partition(":")[0]
    if scheme.lower() == "bearer":
        return credentials.strip()
    return ""


class WriteKeyAuthentication(BaseAuthentication):
    """request.auth = the ResolvedKey of an active write key. A read key is refused (403)."""

    def authenticate(self, request):
        raw = raw_key_from(request)
        if not raw:
            return None
        resolved = apikeys.key_resolve(raw, kind=SourceKey.Kind.WRITE)
        if resolved is None:
            if apikeys.key_resolve(raw, kind=SourceKey.Kind.READ) is not None:
                raise exceptions.PermissionDenied("A read key cannot write consent; use the source's write key.")
            raise exceptions.AuthenticationFailed("Unknown, revoked or expired write key.")
        return AnonymousUser(), resolved

    def authenticate_header(self, request):
        return 'Basic realm="cdp"'


class WriteKeyScheme(OpenApiAuthenticationExtension):
    """How the OpenAPI document describes the write key: HTTP Basic, key as the user name."""

    target_class = WriteKeyAuthentication
    name = "writeKey"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "basic",
                "description": "The source's write key as the HTTP Basic user name, empty password."}
