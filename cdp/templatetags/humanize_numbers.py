from django import template

register = template.Library()


@register.filter
def thousands(value):
    """12345 -> '12,345' (no locale machinery, same output everywhere)."""
    try:
        return f"{int(value):,}"
    except (TypeError, ValueError):
        return value


@register.filter
def as_json(value):
    """Compact JSON for display (dicts from JSONFields would otherwise print as Python reprs)."""
    import orjson

    return orjson.dumps(value).decode()
