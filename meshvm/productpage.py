"""Reads what BookInfo's product page shows about ratings, in both markups (docs/facts.md section 2).

New UI (bookinfo images 1.20.1+): a full star is an <svg id="glyphicon glyphicon-star"> inside a
div whose class holds text-black-500 (reviews v2) or text-red-500 (v3). Old UI (<= 1.19): a
<span class="glyphicon glyphicon-star"> inside <font color="black|red">; empty stars are
glyphicon-star-empty. reviews v1 shows no stars.
"""

from __future__ import annotations

from dataclasses import dataclass
from html.parser import HTMLParser

UNAVAILABLE = "Ratings service is currently unavailable"
REVIEWS_ERROR = "Error fetching product reviews"
_COLOR_CLASSES = {"text-black-500": "black", "text-red-500": "red"}


@dataclass(frozen=True)
class Reading:
    full_stars: int
    color: str | None  # black (v2), red (v3), None (v1 or no ratings)
    unavailable: bool  # "Ratings service is currently unavailable"
    reviews_error: bool
    title_ok: bool

    @property
    def version(self) -> str:
        return {"black": "v2", "red": "v3"}.get(self.color or "", "v1")


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str | None] = []  # the color each open element sets (None: inherits)
        self.stars = 0
        self.colors: set[str] = set()
        self.title, self._in_title = "", False

    def color(self) -> str | None:
        return next((c for c in reversed(self.stack) if c), None)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        classes = a.get("class", "").split()
        mine = next((_COLOR_CLASSES[c] for c in classes if c in _COLOR_CLASSES), None)
        if tag == "font" and a.get("color") in ("black", "red"):
            mine = a["color"]
        full = (tag == "svg" and a.get("id") == "glyphicon glyphicon-star") or \
               (tag == "span" and "glyphicon-star" in classes)
        if full and self.color():
            self.stars += 1
            self.colors.add(self.color() or "")
        self._in_title = tag == "title"
        if tag not in ("br", "img", "meta", "link", "input", "hr", "path"):
            self.stack.append(mine)

    def handle_endtag(self, tag: str) -> None:
        self._in_title = False
        if tag not in ("br", "img", "meta", "link", "input", "hr", "path") and self.stack:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data


def read(html: str) -> Reading:
    p = _Parser()
    p.feed(html)
    color = sorted(p.colors)[0] if len(p.colors) == 1 else ("mixed" if p.colors else None)
    return Reading(p.stars, color, UNAVAILABLE in html, REVIEWS_ERROR in html,
                   p.title.strip() == "Simple Bookstore App")
