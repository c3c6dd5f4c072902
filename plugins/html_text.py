"""Readable text from an HTML page: the title, the text with block breaks, no scripts or styles.

Parsed by libxml2's HTML parser (through lxml) in event mode: lxml calls a
small target object for each start tag, end tag and run of text, and no tree
is built. That tokenizer is linear in the input, including on the inputs that
made the standard library's ``html.parser`` quadratic (thousands of unclosed
``<a`` tags) and the ones that make an HTML5 tree builder quadratic (deeply
nested or misnested elements, whose every start tag searches the stack of open
elements). The http plugin still runs it in an isolated worker process, so even
a surprise cannot hold the event loop or outlive the tool's timeout.
"""

from __future__ import annotations

import re

from lxml import etree

# Elements whose content is never readable text (head holds the title, taken apart).
_SKIPPED = frozenset({"script", "style", "noscript", "template", "svg", "head"})
_BLOCKS = frozenset({
    "p", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section", "article",
    "pre", "ul", "ol", "table", "blockquote", "header", "footer", "nav", "main", "aside",
})
_SPACES = re.compile(r"[ \t\r\f\v\xa0]+")
_BLANK_LINES = re.compile(r"\n{3,}")


class _TextCollector:
    """An lxml parser target: it only collects, so memory grows with the text, not the markup."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.title_parts: list[str] = []
        self._skip_depth = 0
        self._title_depth = 0

    def start(self, tag: object, attrib: object) -> None:
        if tag == "title":
            self._title_depth += 1
        if tag in _SKIPPED:
            self._skip_depth += 1
        elif not self._skip_depth and (tag in _BLOCKS or tag == "br"):
            self.parts.append("\n")

    def end(self, tag: object) -> None:
        if tag == "title" and self._title_depth:
            self._title_depth -= 1
        if tag in _SKIPPED:
            self._skip_depth = max(0, self._skip_depth - 1)
        elif not self._skip_depth and tag in _BLOCKS:
            self.parts.append("\n")

    def data(self, text: str) -> None:
        if self._title_depth:
            self.title_parts.append(text)
        if not self._skip_depth:
            self.parts.append(text)

    def comment(self, text: str) -> None:
        return None

    def close(self) -> None:
        return None


def html_to_text(html: str) -> tuple[str, str]:
    """Return ``(title, text)`` for an HTML document; linear in the document's length."""
    collector = _TextCollector()
    if html.strip():
        # Bytes with an explicit encoding: the text is already decoded, so a <meta charset>
        # or an XML declaration in the page must not make the parser decode it again.
        parser = etree.HTMLParser(
            target=collector, encoding="utf-8", no_network=True, remove_comments=True, remove_pis=True
        )
        try:
            parser.feed(html.encode("utf-8", errors="replace"))
            parser.close()
        except etree.LxmlError:
            # libxml2 recovers from malformed markup; what it could not read is simply left out.
            pass
    title = _SPACES.sub(" ", " ".join("".join(collector.title_parts).split())).strip()
    return title, _readable("".join(collector.parts))


def _readable(text: str) -> str:
    lines = (_SPACES.sub(" ", line).strip() for line in text.splitlines())
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()
