"""Device type, OS and browser of an event, from its context (or, failing that, its user agent).

Segment messages carry `context.device.type` / `context.os.name` from mobile SDKs; browsers
send only `context.userAgent`, so a small, conservative classifier fills the gaps. Unknown
stays empty rather than guessed.
"""

import re

_OS = [("iOS", re.compile(r"iPhone|iPad|iPod")), ("Android", re.compile(r"Android")),
       ("Windows", re.compile(r"Windows")), ("macOS", re.compile(r"Mac OS X|Macintosh")),
       ("ChromeOS", re.compile(r"CrOS")), ("Linux", re.compile(r"Linux"))]
_BROWSERS = [("Edge", re.compile(r"Edg/|Edge/")), ("Opera", re.compile(r"OPR/|Opera")),
             ("Samsung Internet", re.compile(r"SamsungBrowser")), ("Firefox", re.compile(r"Firefox/|FxiOS")),
             ("Chrome", re.compile(r"Chrome/|CriOS")), ("Safari", re.compile(r"Safari/"))]
_TABLET = re.compile(r"iPad|Tablet|Android(?!.*Mobile)")
_MOBILE = re.compile(r"Mobi|iPhone|iPod|Android")
_BOT = re.compile(r"bot|crawler|spider", re.IGNORECASE)


def _first(table, text: str) -> str:
    return next((name for name, pattern in table if pattern.search(text)), "")


def device_fields(device_type: str | None, os_name: str | None, browser: str | None,
                  user_agent: str | None) -> tuple[str, str, str]:
    """(device type, OS, browser), each at most 20/40/40 characters, "" when unknown."""
    device_type, os_name, browser = (device_type or "").strip(), (os_name or "").strip(), (browser or "").strip()
    if user_agent and not (device_type and os_name and browser):
        agent = user_agent[:512]
        os_name = os_name or _first(_OS, agent)
        browser = browser or _first(_BROWSERS, agent)
        if not device_type and not _BOT.search(agent):
            device_type = "tablet" if _TABLET.search(agent) else "mobile" if _MOBILE.search(agent) else "desktop"
    return device_type.lower()[:20], os_name[:40], browser[:40]


def device_sql(device: str = "f.device", os_column: str = "f.os", browser: str = "f.browser",
               user_agent: str = "f.ua") -> tuple[dict, list]:
    """The same classification as `device_fields`, as SQL over a row's columns (for the resolver's
    set-based activity update): ({"device": …, "os": …, "browser": …} Composables, parameters)."""
    from psycopg import sql

    def column(name: str) -> sql.Composable:
        return sql.SQL(".").join(sql.Identifier(part) for part in name.split("."))

    agent = sql.SQL("left({}, 512)").format(column(user_agent))
    params: list = []

    def cascade(table) -> sql.Composable:
        cases = []
        for name, pattern in table:
            cases.append(sql.SQL("WHEN {} ~ %s THEN %s").format(agent))
            params.extend([pattern.pattern, name])
        return sql.SQL("CASE {} ELSE '' END").format(sql.SQL(" ").join(cases))

    device_expr = sql.SQL(
        "left(lower(COALESCE(NULLIF(btrim({d}), ''), CASE WHEN {a} IS NULL OR {a} ~* %s THEN '' "
        "WHEN {a} ~ %s THEN 'tablet' WHEN {a} ~ %s THEN 'mobile' ELSE 'desktop' END)), 20)"
    ).format(d=column(device), a=agent)
    params.extend([_BOT.pattern, _TABLET.pattern, _MOBILE.pattern])
    os_expr = sql.SQL("left(COALESCE(NULLIF(btrim({}), ''), {}), 40)").format(column(os_column), cascade(_OS))
    browser_expr = sql.SQL("left(COALESCE(NULLIF(btrim({}), ''), {}), 40)").format(column(browser),
                                                                                   cascade(_BROWSERS))
    return {"device": device_expr, "os": os_expr, "browser": browser_expr}, params
