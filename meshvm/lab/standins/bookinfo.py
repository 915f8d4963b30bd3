#!/usr/bin/env python3
"""STAND-IN for BookInfo's details, reviews and productpage apps (lab only): their documented HTTP
behaviour (docs/facts.md section 2) and nothing more. Standard library only; run as its own process,
inside a pod's network namespace, with the Deployment's container env:

    python3 bookinfo.py <details|reviews|productpage> --port 9080

details      GET /details/<n>  -> 200 the book's details (docs/facts.md); non-numeric -> 400
reviews      GET /reviews/<n>  -> 200 two reviews (Reviewer1, Reviewer2)
             STANDIN_VERSION v1|v2|v3 (the kubelet stand-in takes it from the image name,
             examples-bookinfo-reviews-v2 -> v2). v1 never calls ratings; v2 (black stars, 10 s timeout)
             and v3 (red stars, 2.5 s timeout) call
             http://${RATINGS_HOSTNAME:-ratings}${SERVICES_DOMAIN:+.$SERVICES_DOMAIN}:${RATINGS_SERVICE_PORT:-9080}/ratings/<n>
             and on any failure give each review {"error": "Ratings service is currently unavailable"}.
productpage  GET /productpage  -> the page (new UI star markup, bookinfo images 1.20.1+) built from
             http://${DETAILS_HOSTNAME:-details}${SERVICES_DOMAIN:+.$SERVICES_DOMAIN}:${DETAILS_SERVICE_PORT:-9080}/details/0
             and the same for reviews (REVIEWS_HOSTNAME, REVIEWS_SERVICE_PORT): product id 0, a 3 s
             timeout per call, reviews tried twice, as the real productpage does.
all          GET /health -> 200.

Names are resolved the normal way (the pod's resolv.conf points at the cluster-DNS stand-in); HTTP
proxy variables are ignored. The pod name shown as "Reviews served by" is $HOSTNAME.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import signal
import sys
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

UNAVAILABLE = "Ratings service is currently unavailable"
REVIEW_TEXTS = {
    "Reviewer1": "An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!",
    "Reviewer2": "Absolutely fun and entertaining. The play lacks thematic depth when compared to other "
                 "plays by Shakespeare.",
}
STARS = {"v2": ("black", 10.0), "v3": ("red", 2.5)}  # color, ratings timeout (s)
PRODUCT: dict[str, Any] = {"id": 0, "title": "The Comedy of Errors",
           "summary": "The Comedy of Errors is one of William Shakespeare's early plays."}
CALL_TIMEOUT_S = 3.0  # productpage's timeout for details and for each reviews attempt

# no proxy from the environment: the app talks to the mesh directly, as the real ones do
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def service_url(env: dict[str, str], name: str) -> str:
    """http://<NAME_HOSTNAME or name>[.<SERVICES_DOMAIN>]:<NAME_SERVICE_PORT or 9080>"""
    host = env.get(f"{name.upper()}_HOSTNAME") or name
    domain = env.get("SERVICES_DOMAIN")
    port = env.get(f"{name.upper()}_SERVICE_PORT") or "9080"
    return f"http://{host}{'.' + domain if domain else ''}:{port}"


def get_json(url: str, timeout: float) -> tuple[int, Any]:
    """(status, decoded JSON or None); status 0 when no answer came (refused, timeout, DNS)."""
    try:
        with _OPENER.open(url, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        e.close()
        return e.code, None
    except (OSError, ValueError):
        return 0, None


# -- the three apps: (status, content type, body) for a path ---------------------------------------

def details(path: str, env: dict[str, str]) -> tuple[int, Any]:
    m = re.fullmatch(r"/details/(.*)", path)
    if not m:
        return 404, {"error": "not found"}
    if not m.group(1).isdigit():
        return 400, {"error": "please provide numeric product id"}
    return 200, {"id": int(m.group(1)), "author": "William Shakespeare", "year": 1595, "type": "paperback",
                 "pages": 200, "publisher": "PublisherA", "language": "English",
                 "ISBN-10": "1234567890", "ISBN-13": "123-1234567890"}


def reviews(path: str, env: dict[str, str]) -> tuple[int, Any]:
    m = re.fullmatch(r"/reviews/(\d+)", path)
    if not m:
        return 404, {"error": "not found"}
    version = env.get("STANDIN_VERSION", "v1")
    product_id = m.group(1)
    ratings: dict[str, int] | None = None
    if version in STARS:
        status, doc = get_json(f"{service_url(env, 'ratings')}/ratings/{product_id}", STARS[version][1])
        if status == 200 and isinstance(doc, dict) and isinstance(doc.get("ratings"), dict):
            ratings = doc["ratings"]
    out = []
    for reviewer, text in REVIEW_TEXTS.items():
        review: dict[str, Any] = {"reviewer": reviewer, "text": text}
        if version in STARS:
            stars = (ratings or {}).get(reviewer)
            review["rating"] = ({"stars": stars, "color": STARS[version][0]} if isinstance(stars, int)
                                else {"error": UNAVAILABLE})
        out.append(review)
    podname = env.get("HOSTNAME") or f"reviews-{version}"
    return 200, {"id": product_id, "podname": podname, "clustername": "null", "reviews": out}


def productpage(env: dict[str, str]) -> str:
    d_status, d = get_json(f"{service_url(env, 'details')}/details/{PRODUCT['id']}", CALL_TIMEOUT_S)
    r_status, r = 0, None
    for _ in range(2):
        r_status, r = get_json(f"{service_url(env, 'reviews')}/reviews/{PRODUCT['id']}", CALL_TIMEOUT_S)
        if r_status == 200:
            break
    return render(d if d_status == 200 else None, r if r_status == 200 else None)


_FULL = ('<svg id="glyphicon glyphicon-star" class="h-5 w-5 flex-none" viewBox="0 0 20 20" '
         'fill="currentColor" aria-hidden="true"><path d="M10 2l2.5 5.5 5.5.5-4 4 1 6-5-3-5 3 1-6-4-4 '
         '5.5-.5z"/></svg>')
_EMPTY = ('<svg class="h-5 w-5 flex-none" viewBox="0 0 20 20" fill="none" stroke="currentColor">'
          '<path d="M10 2l2.5 5.5 5.5.5-4 4 1 6-5-3-5 3 1-6-4-4 5.5-.5z"/></svg>')
_COLOR = {"black": "text-black-500", "red": "text-red-500"}


def render(details_doc: Any, reviews_doc: Any) -> str:
    e = html.escape
    parts = ["<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n<title>Simple Bookstore App</title>\n"
             "</head>\n<body>\n", f"<h1>{e(PRODUCT['title'])}</h1>\n<p>{e(PRODUCT['summary'])}</p>\n"]
    if isinstance(details_doc, dict):
        parts.append("<h4>Book Details</h4>\n<table><tbody>\n")
        for key in ("type", "pages", "publisher", "language", "ISBN-10", "ISBN-13"):
            parts.append(f"<tr><td>{e(key)}</td><td>{e(str(details_doc.get(key, '')))}</td></tr>\n")
        parts.append("</tbody></table>\n")
    else:
        parts.append("<h4>Error fetching product details!</h4>\n"
                     "<p>Sorry, product details are currently unavailable for this book.</p>\n")
    if isinstance(reviews_doc, dict):
        parts.append("<h4>Book Reviews</h4>\n")
        for review in reviews_doc.get("reviews") or []:
            parts.append("<section>\n")
            rating = review.get("rating") or {}
            if isinstance(rating.get("stars"), int) and rating.get("color") in _COLOR:
                n = max(0, min(5, rating["stars"]))
                parts.append(f'<div class="flex gap-x-1 {_COLOR[rating["color"]]}">'
                             + _FULL * n + _EMPTY * (5 - n) + "</div>\n")
            elif rating.get("error"):
                parts.append(f'<div class="text-gray-500">{e(str(rating["error"]))}</div>\n')
            parts.append(f"<blockquote><p>{e(str(review.get('text', '')))}</p></blockquote>\n"
                         f"<div>{e(str(review.get('reviewer', '')))}</div>\n"
                         f"<div>Reviews served by: {e(str(reviews_doc.get('podname', '')))}</div>\n"
                         "</section>\n")
    else:
        parts.append("<h4>Error fetching product reviews!</h4>\n"
                     "<p>Sorry, product reviews are currently unavailable for this book.</p>\n")
    parts.append("</body>\n</html>\n")
    return "".join(parts)


# -- serving ---------------------------------------------------------------------------------------

HEALTH = {"details": "Details is healthy", "reviews": "Reviews is healthy", "productpage": "Product page is healthy"}


class Handler(BaseHTTPRequestHandler):
    app = ""
    env: dict[str, str] = {}
    server_version = "bookinfo-standin"
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/health":
            return self.send(200, "application/json", json.dumps({"status": HEALTH[self.app]}))
        if self.app == "productpage":
            if path == "/productpage":
                return self.send(200, "text/html; charset=utf-8", productpage(self.env))
            return self.send(404, "text/plain", "not found\n")
        status, doc = (details if self.app == "details" else reviews)(path, self.env)
        self.send(status, "application/json", json.dumps(doc))

    def send(self, status: int, ctype: str, body: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # quiet: errors only

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"{self.app}: {format % args}\n")


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="BookInfo app stand-in (lab only)")
    parser.add_argument("app", choices=sorted(HEALTH))
    parser.add_argument("--port", type=int, default=9080)
    parser.add_argument("--lab-tag", help="the lab run's tag: the janitor finds a killed run's apps by it")
    args = parser.parse_args(argv)
    handler = type("AppHandler", (Handler,), {"app": args.app, "env": dict(os.environ)})
    server = Server(("0.0.0.0", args.port), handler)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    sys.stderr.write(f"{args.app} stand-in ({os.environ.get('STANDIN_VERSION', 'v1')}) "
                     f"listening on {server.server_address[1]}\n")
    sys.stderr.flush()
    while not stop.wait(1.0):
        pass
    server.shutdown()
    server.server_close()
    thread.join(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
