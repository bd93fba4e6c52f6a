"""A minimal notes web app for the `notes` SelfPrivacy module example.

Notes are plain files in NOTES_DIR. GET / lists them with a form,
GET /<name> shows one, POST / (form fields `name`, `text`) saves one.
Python's standard library only; it listens on 127.0.0.1 behind nginx.

Every request needs HTTP Basic authentication: any user name, and the
password in NOTES_PASSWORD_FILE (the module generates it on first start).
A body larger than NOTES_MAX_UPLOAD_MB is refused before it is read.
"""
import base64
import hmac
import html
import os
import re
import tempfile
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DIR = os.environ.get("NOTES_DIR", "/var/lib/notes")
PORT = int(os.environ.get("NOTES_PORT", "8090"))
MAX_BYTES = int(os.environ.get("NOTES_MAX_UPLOAD_MB", "16")) * 1024 * 1024
TITLE = os.environ.get("NOTES_TITLE", "")
NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}\Z")


def read_password():
    path = os.environ.get("NOTES_PASSWORD_FILE", os.path.join(DIR, ".password"))
    with open(path, encoding="utf-8") as f:
        password = f.read().strip()
    if not password:
        raise SystemExit(f"notes: {path} is empty; refusing to serve without a password")
    return password.encode()


PASSWORD = b""


class Notes(BaseHTTPRequestHandler):
    def reply(self, status, body, kind="text/html; charset=utf-8"):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def page(self, inner):
        heading = f"<h1>{html.escape(TITLE)}</h1>" if TITLE else ""
        return f"<!doctype html><meta charset=utf-8><title>Notes</title>{heading}{inner}"

    def authorized(self):
        """True if the request carries the password; otherwise answers 401."""
        kind, _, credentials = (self.headers.get("Authorization") or "").partition(" ")
        try:
            _user, _, given = base64.b64decode(credentials, validate=True).partition(b":")
        except ValueError:
            given = b""
        if kind.lower() == "basic" and hmac.compare_digest(given, PASSWORD):
            return True
        data = b"authentication required\n"
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="Notes", charset="UTF-8"')
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        return False

    def do_GET(self):
        if not self.authorized():
            return
        name = urllib.parse.unquote(self.path.lstrip("/"))
        if not name:
            items = "".join(
                f'<li><a href="/{urllib.parse.quote(n)}">{html.escape(n)}</a>'
                for n in sorted(os.listdir(DIR)) if NAME.match(n))
            form = ('<form method=post><input name=name placeholder=name required>'
                    '<textarea name=text></textarea><button>Save</button></form>')
            return self.reply(200, self.page(f"<ul>{items}</ul>{form}"))
        if not NAME.match(name) or not os.path.isfile(os.path.join(DIR, name)):
            return self.reply(404, "not found\n", "text/plain")
        with open(os.path.join(DIR, name), encoding="utf-8", errors="replace") as f:
            self.reply(200, self.page(f"<pre>{html.escape(f.read())}</pre>"))

    def do_POST(self):
        if not self.authorized():
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            return self.reply(400, "bad Content-Length\n", "text/plain")
        if length > MAX_BYTES:
            self.close_connection = True  # the body is not read
            return self.reply(413, "too large\n", "text/plain")
        form = urllib.parse.parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
        name = form.get("name", [""])[0]
        if not NAME.match(name):
            return self.reply(400, "bad name\n", "text/plain")
        fd, tmp = tempfile.mkstemp(dir=DIR, prefix=".tmp-")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(form.get("text", [""])[0])
        os.replace(tmp, os.path.join(DIR, name))
        self.send_response(303)
        self.send_header("Location", "/" + urllib.parse.quote(name))
        self.send_header("Content-Length", "0")
        self.end_headers()


if __name__ == "__main__":
    PASSWORD = read_password()
    ThreadingHTTPServer(("127.0.0.1", PORT), Notes).serve_forever()
