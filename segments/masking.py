"""Masking personal fields for roles that may not see them, and CSV cells that are safe to open."""

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def mask_text(value: str | None) -> str:
    """"Anna" -> "A***"; empty stays empty."""
    if not value:
        return ""
    return value[0] + "***"


def mask_email(value: str | None) -> str:
    """"anna.smith@example.com" -> "a***@example.com"."""
    if not value:
        return ""
    local, _, domain = value.partition("@")
    return f"{local[:1]}***@{domain}" if domain else mask_text(value)


def csv_safe(value) -> str:
    """A cell a spreadsheet will not run as a formula (OWASP CSV injection): prefix with '."""
    text = "" if value is None else str(value)
    if text.startswith(FORMULA_PREFIXES):
        return "'" + text
    return text
