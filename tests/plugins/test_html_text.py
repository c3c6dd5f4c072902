"""HTML to readable text in linear time (issue 9, item 2)."""

from __future__ import annotations

import time

import pytest

from plugins.html_text import html_to_text
from runtime.plugin_host.isolation import run_isolated
from tests.plugins.tooling import ALLOW_LOOPBACK, Page, call_tool, local_site


def test_title_blocks_and_no_scripts_or_styles() -> None:
    page = """<!doctype html><html><head><title>Opening
        hours</title><style>p{color:red}</style><script>evil()</script></head>
        <body><nav><ul><li>Home</li><li>Shop</li></ul></nav>
        <h1>Hours</h1><p>Mon&ndash;Fri  9&#8209;17<br>Sat 10-14</p>
        <div>Closed on <b>Sundays</b> &amp; holidays</div>
        <noscript>enable js</noscript><template>hidden</template><svg><text>logo</text></svg>
        <!-- a comment --><pre>a  b</pre></body></html>"""
    title, text = html_to_text(page)
    assert title == "Opening hours"
    assert text == "Home\n\nShop\n\nHours\n\nMon\u2013Fri 9\u201117\nSat 10-14\n\nClosed on Sundays & holidays\n\na b"


@pytest.mark.parametrize(
    "page",
    ["", "   ", "<", "</p></div>", "<script>", "\x00", "text without markup", "<title>only a title"],
)
def test_degenerate_documents_give_text_not_errors(page: str) -> None:
    title, text = html_to_text(page)
    assert isinstance(title, str) and isinstance(text, str)


def test_declared_charsets_do_not_re_decode_text() -> None:
    page = '<?xml version="1.0" encoding="iso-8859-1"?><html><head><meta charset="iso-8859-1"><title>Café</title></head><body>crème brûlée</body></html>'
    assert html_to_text(page) == ("Café", "crème brûlée")


# Inputs that are quadratic for html.parser (unclosed tags) or for an HTML5 tree
# builder (deep or misnested elements), each about 1 MB: the old parser took 23 s
# on 30 KB of the first one.
PATHOLOGICAL_PAGES = {
    "unclosed <a, the issue's input scaled up": " <a" * 333_000,
    "open anchors": "<a>" * 333_000,
    "nested divs": "<div>" * 200_000,
    "paragraphs in divs": "<p><div>x" * 110_000,
    "misnested formatting": "<b><i><u><s>x</b>" * 60_000,
    "every formatting element": "<a><b><big><code><em><font><i><nobr><s><small><strike><strong><tt><u>" * 14_000,
    "duplicate attributes": "<a " + " ".join(f"a{i}" for i in range(130_000)) + ">",
    "nested tables": "<table><tr><td>" * 66_000,
    "open comment": "<!--" + "-" * 1_000_000,
    "open list items": "<li>x" * 200_000,
}


@pytest.mark.parametrize("page", PATHOLOGICAL_PAGES.values(), ids=PATHOLOGICAL_PAGES.keys())
async def test_pathological_markup_converts_in_linear_time(page: str) -> None:
    started = time.monotonic()
    # Isolated with a limit, so a regression fails here instead of hanging the suite.
    title, text = await run_isolated(html_to_text, page, timeout_s=20)
    assert time.monotonic() - started < 10  # ~0.3 s each here; quadratic parsers take minutes to hours
    assert isinstance(text, str)


def test_http_fetch_converts_the_issues_page_promptly() -> None:
    with local_site() as site:
        site.pages["/unclosed"] = Page((" <a" * 10_000).encode())
        started = time.monotonic()
        result = call_tool("http", "fetch", ALLOW_LOOPBACK, url=f"{site.url}/unclosed")
    assert time.monotonic() - started < 5  # 23 s with html.parser
    assert result["status"] == 200 and result["text"] == ""
