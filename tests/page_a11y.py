"""A small accessibility and validity checker for the generated HTML pages (standard library only).

:func:`problems` parses one page with :class:`html.parser.HTMLParser` and lists what a screen
reader or keyboard user would trip over: no ``<html lang>``, not exactly one ``<h1>``, a skipped
heading level, an ``<img>`` without a meaningful ``alt``, a data table without a caption or
accessible name, a ``<th>`` without ``scope``, a form control without a label, a link or button
without discernible text, a duplicate id, an ``aria-labelledby`` that points nowhere, an
``aria-label`` on an element with no role to carry it, and an unclosed or stray element. Each
problem is one line naming the element and its line.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
# end tags HTML lets a page leave out (the parser then closes them implicitly)
OPTIONAL_END = {"li", "dt", "dd", "p", "tr", "td", "th", "thead", "tbody", "option", "html", "head", "body"}
LABELLABLE = {"input", "select", "textarea", "progress", "meter"}
# elements whose implicit role can carry an aria-label (generic div/span cannot)
NAMEABLE = {"a", "button", "input", "select", "textarea", "progress", "meter", "table", "figure", "nav",
            "section", "form", "img", "svg", "main", "details", "ol", "ul", "dialog", "iframe"}
# alt texts that name a file or say nothing about the picture
MEANINGLESS_ALT = re.compile(r"^(?:|image|img|picture|figure|plot|graph|chart|photo|[\w.-]+\.(?:png|svg|jpe?g|gif|webp))$", re.I)


class _Element:
    def __init__(self, tag: str, attrs: dict[str, str | None], line: int):
        self.tag, self.attrs, self.line = tag, attrs, line
        self.text: list[str] = []  # text and alt/aria-label of descendants, for discernible names
        self.has_caption = False
        self.in_label = False


class _Checker(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[_Element] = []
        self.problems: list[str] = []
        self.ids: dict[str, int] = {}
        self.labelled_by: list[tuple[str, int]] = []
        self.label_for: set[str] = set()
        self.controls: list[_Element] = []
        self.headings: list[tuple[int, int]] = []
        self.lang: str | None = None
        self.tables: list[_Element] = []

    def _where(self, el: _Element) -> str:
        return f"line {el.line} <{el.tag}{''.join(f' {k}' + (f'={v!r}' if v is not None else '') for k, v in el.attrs.items() if k in ('id', 'class', 'src', 'href', 'type', 'name'))}>"

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        el = _Element(tag, attrs, self.getpos()[0])
        if tag == "html":
            self.lang = attrs.get("lang")
        if "id" in attrs:
            if attrs["id"] in self.ids:
                self.problems.append(f"duplicate id {attrs['id']!r} (lines {self.ids[attrs['id']]} and {el.line})")
            self.ids[attrs["id"]] = el.line
        for ref in (attrs.get("aria-labelledby") or "").split():
            self.labelled_by.append((ref, el.line))
        if "aria-label" in attrs and tag not in NAMEABLE and "role" not in attrs:
            self.problems.append(f"{self._where(el)}: aria-label on an element without a role")
        if tag == "label" and attrs.get("for"):
            self.label_for.add(attrs["for"])
        if re.fullmatch(r"h[1-6]", tag):
            self.headings.append((int(tag[1]), el.line))
        if tag == "img":
            alt = attrs.get("alt")
            if alt is None or MEANINGLESS_ALT.match(alt.strip()):
                self.problems.append(f"{self._where(el)}: alt {alt!r} does not say what the image shows")
            for parent in self.stack:
                parent.text.append(alt or "")
        if tag in LABELLABLE and attrs.get("type") not in ("hidden", "submit", "button"):
            el.in_label = any(p.tag == "label" for p in self.stack)
            self.controls.append(el)
        if tag == "table":
            self.tables.append(el)
        if tag == "th":
            if "scope" not in attrs:
                self.problems.append(f"{self._where(el)}: <th> without scope")
        if attrs.get("aria-label"):
            for parent in self.stack:
                parent.text.append(attrs["aria-label"])
        if tag not in VOID:
            self.stack.append(el)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID and self.stack and self.stack[-1].tag == tag:
            self.stack.pop()

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not any(el.tag == tag for el in self.stack):
            self.problems.append(f"line {self.getpos()[0]}: stray </{tag}>")
            return
        while self.stack:
            el = self.stack.pop()
            if el.tag == tag:
                self._close(el)
                return
            if el.tag not in OPTIONAL_END:
                self.problems.append(f"{self._where(el)}: not closed before </{tag}> on line {self.getpos()[0]}")
            self._close(el)

    def _close(self, el: _Element) -> None:
        name = " ".join("".join(el.text).split()) or el.attrs.get("aria-label") or el.attrs.get("title")
        if el.tag in ("a", "button") and not name and not el.attrs.get("aria-labelledby"):
            self.problems.append(f"{self._where(el)}: {el.tag} without discernible text")
        if el.tag == "caption":
            table = next((p for p in reversed(self.stack) if p.tag == "table"), None)
            if table is not None:
                table.has_caption = True

    def handle_data(self, data):
        for el in self.stack:
            el.text.append(data)

    def finish(self) -> list[str]:
        for el in self.stack:
            if el.tag not in OPTIONAL_END:
                self.problems.append(f"{self._where(el)}: never closed")
        if not self.lang:
            self.problems.append("<html> has no lang")
        h1 = [line for level, line in self.headings if level == 1]
        if len(h1) != 1:
            self.problems.append(f"{len(h1)} <h1> elements (lines {h1}), want exactly one")
        previous = 0
        for level, line in self.headings:
            if level > previous + 1:
                self.problems.append(f"line {line}: <h{level}> after <h{previous}> skips a level")
            previous = level
        for ref, line in self.labelled_by:
            if ref not in self.ids:
                self.problems.append(f"line {line}: aria-labelledby {ref!r} names no element")
        for el in self.controls:
            named = (el.attrs.get("id") in self.label_for or el.attrs.get("aria-label")
                     or el.attrs.get("aria-labelledby") or el.in_label)
            if not named:
                self.problems.append(f"{self._where(el)}: form control without a label")
        for el in self.tables:
            if el.attrs.get("role") == "presentation":
                continue
            if not (el.has_caption or el.attrs.get("aria-label") or el.attrs.get("aria-labelledby")):
                self.problems.append(f"{self._where(el)}: table without a caption or accessible name")
        return self.problems


def problems(html: str) -> list[str]:
    """The accessibility and validity problems of one HTML page, one line each (empty: none found)."""
    checker = _Checker()
    checker.feed(html)
    checker.close()
    return checker.finish()
