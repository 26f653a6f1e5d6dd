"""Files from a directory as HTTP responses: safe path resolution, an in-memory file cache,
content types, validators (ETag and Last-Modified, 304s), Cache-Control and encodings.

`StaticDirectory(root, prefix)` is a route (`route(request) -> Response | None`) for
krabfast's own pages (WebChat). The pieces it is built from (`FileCache`, `resolve_inside`,
`choose_encoding`, ...) are public so the Control UI (krabfast/web/control_ui.py) can apply
the reference's own, slightly different, rules with the same file handling.

Files are read once and kept in memory (they are small web assets), keyed by resolved path,
mtime and size, so a request costs one stat() after the first: the event loop never waits on
a read of a file it has served before. A changed file is noticed by its stat and read again.
"""

from __future__ import annotations

import base64
import email.utils
import gzip
import hashlib
import mimetypes
import os
import re
import stat
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from krabfast.web.request import Request, Response

IMMUTABLE = "public, max-age=31536000, immutable"
NO_CACHE = "no-cache"

# The types a browser must see exactly (module scripts are refused with a wrong type);
# anything else goes through `mimetypes`, then application/octet-stream.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8", ".htm": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8", ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8", ".json": "application/json; charset=utf-8",
    ".map": "application/json; charset=utf-8", ".txt": "text/plain; charset=utf-8",
    ".md": "text/markdown; charset=utf-8", ".svg": "image/svg+xml",
    ".webmanifest": "application/manifest+json", ".wasm": "application/wasm",
    ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
    ".webp": "image/webp", ".avif": "image/avif", ".ico": "image/x-icon",
    ".woff": "font/woff", ".woff2": "font/woff2", ".ttf": "font/ttf", ".otf": "font/otf",
    ".mp3": "audio/mpeg", ".wav": "audio/wav", ".mp4": "video/mp4", ".webm": "video/webm",
    ".pdf": "application/pdf", ".xml": "application/xml",
}
# Worth compressing (the reference's list, plus the text types above).
COMPRESSIBLE = frozenset({".css", ".html", ".htm", ".js", ".mjs", ".json", ".map", ".svg",
                          ".txt", ".md", ".wasm", ".webmanifest", ".xml"})
GZIP_MIN_BYTES = 256  # below this gzip's header makes the body bigger, or barely smaller

# A Vite/Rollup style content hash in the file name (`index-DsEuFQRE.js`): such a file never
# changes under its name, so browsers may keep it for a year.
_HASHED_NAME = re.compile(r"[-.][A-Za-z0-9_]{8,}\.[A-Za-z0-9]+$")


def content_type(name: str) -> str:
    ext = os.path.splitext(name)[1].lower()
    known = CONTENT_TYPES.get(ext)
    if known:
        return known
    guessed, _ = mimetypes.guess_type(name, strict=False)
    if guessed is None:
        return "application/octet-stream"
    return f"{guessed}; charset=utf-8" if guessed.startswith("text/") else guessed


def is_hashed_name(name: str) -> bool:
    m = _HASHED_NAME.search(name.rsplit("/", 1)[-1])
    if not m:
        return False
    tag = m.group(0)[1:].split(".", 1)[0]
    # A hash mixes cases or has digits; a plain word (`-hyperlegible.css`) is not one.
    return any(c.isdigit() for c in tag) or (tag.lower() != tag and tag.upper() != tag)


def http_date(epoch: float) -> str:
    return email.utils.formatdate(epoch, usegmt=True)


def parse_http_date(text: str) -> float | None:
    try:
        parsed = email.utils.parsedate_to_datetime(text.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if parsed is None or parsed.tzinfo is None:
        return None
    return parsed.timestamp()


# --- paths -------------------------------------------------------------------------------

def resolve_inside(root: Path, rel: str) -> Path | None:
    """The regular file `rel` names under `root`, or None. Refuses NUL, backslashes, `..`
    and `.` segments, absolute paths, and anything whose real path (symlinks followed) is not
    inside root's real path: no way out of the directory, however the name is spelt."""
    if not rel or "\x00" in rel or "\\" in rel or rel.startswith("/"):
        return None
    parts = rel.split("/")
    if any(p in ("..", ".") for p in parts) or "" in parts:
        return None
    real = os.path.realpath(os.path.join(os.path.realpath(root), *parts))
    if not is_inside(root, real):
        return None
    try:
        if not stat.S_ISREG(os.stat(real).st_mode):
            return None
    except (OSError, ValueError):
        return None
    return Path(real)


def is_inside(root: Path | str, path: str) -> bool:
    """`path`, symlinks followed, is strictly below `root` (symlinks followed)."""
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    try:
        return real != real_root and os.path.commonpath((real_root, real)) == real_root
    except ValueError:
        return False


# --- the file cache ------------------------------------------------------------------------

@dataclass(slots=True, eq=False)
class CachedFile:
    path: str
    data: bytes
    mtime: float          # seconds since the epoch (st_mtime)
    size: int
    etag: str             # strong, from the content: '"<22 chars of sha256>"'
    _gzip: bytes | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def gzipped(self) -> bytes:
        """The gzip form (level 6), made once on first use; mtime 0 so it is reproducible."""
        if self._gzip is None:
            with self._lock:
                if self._gzip is None:
                    self._gzip = gzip.compress(self.data, compresslevel=6, mtime=0)
        return self._gzip

    def last_modified(self, now: float | None = None) -> float:
        """The mtime in whole seconds, never in the future (HTTP dates have no fractions)."""
        now = time.time() if now is None else now
        return float(int(min(self.mtime, now)))


def etag_for(data: bytes) -> str:
    digest = hashlib.sha256(data).digest()[:16]
    return '"' + base64.urlsafe_b64encode(digest).decode().rstrip("=") + '"'


class FileCache:
    """Contents of the files served, in memory, least recently used dropped past
    `max_bytes`. Safe to share between routes (and threads)."""

    def __init__(self, max_bytes: int = 96 << 20, max_file_bytes: int = 16 << 20) -> None:
        self.max_bytes = max_bytes
        self.max_file_bytes = max_file_bytes  # bigger files are read each time, not kept
        self._entries: OrderedDict[str, CachedFile] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, path: Path | str) -> CachedFile | None:
        """The file at `path` (already resolved and checked), or None when it is not a
        readable regular file."""
        key = str(path)
        try:
            st = os.stat(key)
        except (OSError, ValueError):
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None and hit.mtime == st.st_mtime and hit.size == st.st_size:
                self._entries.move_to_end(key)
                return hit
        try:
            with open(key, "rb") as f:
                data = f.read()
        except OSError:
            return None
        entry = CachedFile(key, data, st.st_mtime, st.st_size, etag_for(data))
        if len(data) != st.st_size or len(data) > self.max_file_bytes:
            return entry  # changed while read, or too big to keep: serve it, keep nothing
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.size
            self._entries[key] = entry
            self._bytes += entry.size
            while self._bytes > self.max_bytes and len(self._entries) > 1:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= dropped.size
        return entry

    def __len__(self) -> int:
        return len(self._entries)


# --- content negotiation and validators -------------------------------------------------

def parse_accept_encoding(header: str) -> dict[str, float]:
    """{coding: q} from an Accept-Encoding header (lower-cased codings)."""
    out: dict[str, float] = {}
    for item in header.split(","):
        coding, _, params = item.strip().partition(";")
        coding = coding.strip().lower()
        if not coding:
            continue
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    q = max(0.0, min(1.0, float(value)))
                except ValueError:
                    q = 0.0
        out[coding] = q
    return out


def coding_quality(accepted: dict[str, float], coding: str) -> float:
    if coding in accepted:
        return accepted[coding]
    if "*" in accepted:
        return accepted["*"]
    return 1.0 if coding == "identity" else 0.0


def choose_encoding(header: str, available: list[str]) -> str | None:
    """The best of `available` codings (in server preference order, e.g. ["br", "gzip",
    "identity"]) for an Accept-Encoding header; None when none is acceptable (406)."""
    if not header.strip():
        return "identity" if "identity" in available else None
    accepted = parse_accept_encoding(header)
    best, best_q = None, 0.0
    for coding in available:
        q = coding_quality(accepted, coding)
        if q > best_q:
            best, best_q = coding, q
    return best


def etag_matches(if_none_match: str, etag: str) -> bool:
    """If-None-Match's weak comparison (RFC 9110 13.1.2): `*`, or any listed tag equal to
    `etag` once W/ is ignored."""
    value = if_none_match.strip()
    if value == "*":
        return True
    bare = etag[2:] if etag.startswith("W/") else etag
    for tag in value.split(","):
        tag = tag.strip()
        if tag.startswith("W/"):
            tag = tag[2:]
        if tag == bare:
            return True
    return False


def modified_since(if_modified_since: str, last_modified: float, now: float | None = None) -> bool:
    """False when If-Modified-Since is a valid date, not in the future, at or after
    `last_modified` (then 304); True otherwise (send the body)."""
    since = parse_http_date(if_modified_since)
    now = time.time() if now is None else now
    if since is None or since > now:
        return True  # unparsable or in the future: invalid, ignored (RFC 9110 13.1.3)
    return last_modified > since


# --- one representation of a file -------------------------------------------------------

def encoded_body(request: Request, entry: CachedFile, name: str, *,
                 siblings: FileCache | None = None, root: Path | None = None,
                 dynamic_gzip: bool = True) -> tuple[str, bytes, str] | None:
    """(coding, body, etag) for the request's Accept-Encoding: a shipped `.br` / `.gz`
    sibling of the file inside `root` when one exists (read through `siblings`), else, when
    `dynamic_gzip`, the file gzipped once in memory; identity otherwise. None: nothing
    acceptable (406). Only compressible types are ever encoded."""
    ext = os.path.splitext(name)[1].lower()
    bodies: dict[str, tuple[bytes | None, str]] = {}
    if ext in COMPRESSIBLE:
        if siblings is not None and root is not None:
            for coding, suffix in (("br", ".br"), ("gzip", ".gz")):
                sib_path = entry.path + suffix
                sib = siblings.get(sib_path) if is_inside(root, sib_path) else None
                if sib is not None:
                    bodies[coding] = (sib.data, sib.etag)
        if "gzip" not in bodies and dynamic_gzip and entry.size >= GZIP_MIN_BYTES:
            bodies["gzip"] = (None, entry.etag[:-1] + '-gz"')  # body made only if chosen
    bodies["identity"] = (entry.data, entry.etag)
    coding = choose_encoding(request.header("accept-encoding"), list(bodies))
    if coding is None:
        return None
    body, etag = bodies[coding]
    if body is None:
        body = entry.gzipped()
    return coding, body, etag


class StaticDirectory:
    """A route serving the files under `root` at URL `prefix` (e.g. "/webchat/").

    - `prefix` without its slash (`/webchat`) redirects (302) to the prefix, query kept.
    - A path ending in `/` serves `index`.
    - ETag (from the content) and Last-Modified; If-None-Match, else If-Modified-Since,
      gives 304 (RFC 9110 13.2.2's order).
    - Cache-Control: `index` and other plain names `no-cache` (always revalidated, so a new
      page is seen at once); names with a content hash `public, max-age=31536000, immutable`.
    - Compressible types: a `.br`/`.gz` sibling when shipped and accepted, else gzip made once
      and kept; `Vary: Accept-Encoding`. Siblings are never served by their own name.
    - GET and HEAD only (405 otherwise); a missing file is 404.
    """

    def __init__(self, root: str | Path, prefix: str, *, index: str = "index.html",
                 cache: FileCache | None = None, headers: list[tuple[str, str]] = ()) -> None:
        if not prefix.startswith("/") or not prefix.endswith("/"):
            raise ValueError(f"prefix must start and end with '/': {prefix!r}")
        self.root = Path(root)
        self.prefix = prefix
        self.index = index
        self.cache = cache if cache is not None else FileCache()
        self.headers = list(headers)  # added to every answer (security headers, ...)

    def __call__(self, request: Request) -> Response | None:
        path = request.path
        if path == self.prefix[:-1] and self.prefix != "/":
            location = self.prefix + ("?" + request.query if request.query else "")
            return Response(302, b"", headers=[("Location", location), *self.headers])
        if not path.startswith(self.prefix):
            return None
        if request.method not in ("GET", "HEAD"):
            return Response.text(405, headers=[("Allow", "GET, HEAD"), *self.headers])
        rel = path[len(self.prefix):]
        if rel == "" or rel.endswith("/"):
            rel += self.index
        if rel.endswith((".br", ".gz")):
            return self.not_found()
        resolved = resolve_inside(self.root, rel)
        entry = self.cache.get(resolved) if resolved is not None else None
        if entry is None:
            return self.not_found()
        return self.file_response(request, entry, rel)

    def not_found(self) -> Response:
        return Response.text(404, headers=list(self.headers))

    def cache_control(self, rel: str) -> str:
        name = rel.rsplit("/", 1)[-1]
        return IMMUTABLE if name != self.index and is_hashed_name(name) else NO_CACHE

    def file_response(self, request: Request, entry: CachedFile, rel: str) -> Response:
        chosen = encoded_body(request, entry, rel, siblings=self.cache, root=self.root)
        vary = os.path.splitext(rel)[1].lower() in COMPRESSIBLE
        common = [("Cache-Control", self.cache_control(rel))]
        if vary:
            common.append(("Vary", "Accept-Encoding"))
        if chosen is None:
            return Response.text(406, headers=[("Cache-Control", "no-store"), *self.headers])
        coding, body, etag = chosen
        last_modified = entry.last_modified()
        validators = [("ETag", etag), ("Last-Modified", http_date(last_modified))]
        inm = request.header("if-none-match")
        ims = request.header("if-modified-since")
        fresh = etag_matches(inm, etag) if inm else (
            bool(ims) and not modified_since(ims, last_modified))
        if fresh:
            return Response(304, b"", headers=[*validators, *common, *self.headers])
        headers = [*validators, *common]
        if coding != "identity":
            headers.append(("Content-Encoding", coding))
        return Response(200, body, content_type(rel), headers=[*headers, *self.headers])


def static_routes(root: str | Path, prefix: str, **kw) -> list:
    """The routes serving `root` at `prefix` (one StaticDirectory; `kw` goes to it)."""
    return [StaticDirectory(root, prefix, **kw)]
