"""The page reader counts full stars in the new and the old markup and sees the failure texts."""

from meshvm.productpage import read

NEW_STAR = '<svg id="glyphicon glyphicon-star" viewBox="0 0 24 24"><path d="M1 1"/></svg>'
NEW_EMPTY = '<svg viewBox="0 0 24 24"><path d="M1 1"/></svg>'
OLD_STAR = '<span class="glyphicon glyphicon-star"></span>'
OLD_EMPTY = '<span class="glyphicon glyphicon-star-empty"></span>'
HEAD = "<html><head><title>Simple Bookstore App</title></head><body>"


def new_ui(css: str, full: tuple[int, int]) -> str:
    blocks = "".join(f'<div class="flex {css}">{NEW_STAR * n}{NEW_EMPTY * (5 - n)}</div>' for n in full)
    return f"{HEAD}<div>Reviewer1</div>{blocks}</body></html>"


def old_ui(color: str, full: tuple[int, int]) -> str:
    blocks = "".join(f'<font color="{color}">{OLD_STAR * n}{OLD_EMPTY * (5 - n)}</font>' for n in full)
    return f"{HEAD}<blockquote><p>review</p>{blocks}</blockquote></body></html>"


def test_new_ui_v2_and_v3():
    r2 = read(new_ui("text-black-500", (5, 4)))
    assert (r2.full_stars, r2.version, r2.unavailable, r2.title_ok) == (9, "v2", False, True)
    assert (read(new_ui("text-red-500", (5, 4))).full_stars, read(new_ui("text-red-500", (5, 4))).version) == (9, "v3")


def test_old_ui_v2_and_v3():
    assert (read(old_ui("black", (5, 4))).full_stars, read(old_ui("black", (5, 4))).version) == (9, "v2")
    assert read(old_ui("red", (3, 1))).full_stars == 4


def test_v1_and_failures():
    v1 = read(f"{HEAD}<p>An extremely entertaining play</p></body></html>")
    assert (v1.full_stars, v1.version) == (0, "v1")
    down = read(f"{HEAD}<div class=\"text-black-500\"><i>Ratings service is currently unavailable</i></div>")
    assert down.unavailable and down.full_stars == 0
    assert read(f"{HEAD}<h3>Error fetching product reviews!</h3>").reviews_error
    assert not read("<html><title>Other</title></html>").title_ok
