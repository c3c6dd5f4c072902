"""The web console at ``/console``: the management API in a browser, served by the gateway itself.

Server-rendered page shells (Jinja2 templates in this package) and small
vanilla JavaScript modules that call ``/admin/v1`` with the admin key the
operator signed in with. The key lives only in the tab's ``sessionStorage``:
the pages themselves are public and hold no data, every figure comes through
the management API. Nothing is fetched from elsewhere: styles, scripts and
charts are files of this package.
"""

from __future__ import annotations

from runtime.console.routes import router

__all__ = ["router"]
