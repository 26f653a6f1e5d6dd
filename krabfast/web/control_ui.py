"""The reference's Control UI (an installed `openclaw` package's `dist/control-ui`) served
by krabfast as the reference serves it (docs/reference/web-facts.md sections 2-3).

`control_ui_routes(config, token_check=...)` gives the routes the HTTP app adds last (the
Control UI's SPA fallback answers paths no other route claims):

- `<basePath>/` and deep links: index.html, rewritten with the `<html>` attributes the UI
  reads (base path, build id, terminal off: krabfast has no terminal), with a CSP that
  carries the SHA-256 of each inline script; `no-cache`, never a validator, gzip on the fly.
  A deep link gets index.html only when the request accepts HTML, else 404; a missing file
  with a static extension (`.js`, `.png`, ...) is always 404.
- `assets/*` (also under a deep path): the shipped `.br`/`.gz` sibling by Accept-Encoding,
  `public, max-age=31536000, immutable`, Last-Modified; other files `no-cache` (immutable
  with `?v=<build id>`). 304 only on If-Modified-Since, or `If-None-Match: *`.
- `<basePath>/control-ui-config.json` (and its aliases): the bootstrap JSON, behind the
  gateway's credential as a bearer token.

Where the UI comes from (`find_control_ui_root`, first hit wins): `--control-ui-root DIR` or
the config's `gateway.controlUi.root`; else `node_modules/openclaw/dist/control-ui` in the
current directory or a parent, or next to the installed krabfast package (or a parent); else
the reference install the interop tests use (`$KRABFAST_REFERENCE_DIR`, default
`~/.cache/krabfast/reference`); else a global npm install (`/usr/local/lib/node_modules`,
`/usr/lib/node_modules`). With none, `/` is a small krabfast page pointing at /webchat/ and at
`--control-ui-root`, and every other path is left to the other routes (404).
"""

from __future__ import annotations

import base64
import hashlib
import html as html_lib
import logging
import os
import re
import zlib
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, quote

from krabfast.web.request import Request, Response
from krabfast.web.static import (IMMUTABLE, NO_CACHE, CachedFile, FileCache, choose_encoding,
                                 content_type, encoded_body, http_date, modified_since,
                                 resolve_inside)

log = logging.getLogger("krabfast.web.control_ui")

Route = Callable[[Request], "Response | None"]

CONTROL_UI_DIR = Path("node_modules") / "openclaw" / "dist" / "control-ui"
GLOBAL_NODE_MODULES = (Path("/usr/local/lib/node_modules"), Path("/usr/lib/node_modules"))

# Served at the root with `?v=<build id>` links; also under /__openclaw__/<name>.
ROOT_PUBLIC = ("favicon.svg", "favicon-32.png", "favicon.ico", "apple-touch-icon.png",
               "manifest.webmanifest", "sw.js")
# A missing file with one of these extensions is a 404, never the SPA's index.html.
STATIC_EXTENSIONS = frozenset({".js", ".css", ".json", ".map", ".svg", ".png", ".jpg",
                               ".jpeg", ".gif", ".webp", ".ico", ".txt", ".wasm",
                               ".webmanifest", ".woff2"})
# Where the reference's Content-Type differs from krabfast's own table (live).
REFERENCE_TYPES = {".js": "application/javascript; charset=utf-8",
                   ".mjs": "application/javascript; charset=utf-8",
                   ".webmanifest": "application/manifest+json; charset=utf-8"}
PROBE_PATHS = frozenset({"/health", "/healthz", "/ready", "/readyz", "/startup", "/startupz"})
# Paths that are never the Control UI (the reference's namespaces, and krabfast's WebChat).
RESERVED_PREFIXES = ("/api", "/j", "/v1", "/webchat")
RESERVED_STARTS = ("/__openclaw__/mcp-app", "/__openclaw__/worker")
CONFIG_JSON = "control-ui-config.json"

SECURITY_HEADERS = (
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Permissions-Policy", "camera=(self), microphone=*, geolocation=*, clipboard-write=*"),
)
_CSP_HEAD = ("default-src 'self'", "base-uri 'none'", "object-src 'none'",
             "frame-ancestors 'none'", "frame-src 'self' http: https:")
_CSP_TAIL = ("style-src 'self' 'unsafe-inline' https://fonts.googleapis.com",
             "img-src 'self' data: blob: https:", "media-src 'self' data: blob:",
             "font-src 'self' https://fonts.gstatic.com", "worker-src 'self'")
_CONNECT_SRC = "connect-src 'self' ws: wss: data: https://api.openai.com https://tweakcn.com"

_HTML_TAG = re.compile(r"<html\b[^>]*>", re.IGNORECASE)
_BUILD_ID_ATTR = re.compile(r'\s+data-openclaw-control-ui-build-id\s*=\s*"([^"]*)"',
                            re.IGNORECASE)
_SCRIPT = re.compile(r"<script\b([^>]*)>(.*?)</script\s*>", re.IGNORECASE | re.DOTALL)
_SRC_ATTR = re.compile(r"\ssrc\s*=", re.IGNORECASE)
_HOSTNAME = re.compile(r"\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+")  # nothing that could end a CSP


def normalize_base_path(value: str | None) -> str:
    """As the reference: trimmed; "" or "/" -> ""; one leading "/", no trailing "/"."""
    text = (value or "").strip()
    if text in ("", "/"):
        return ""
    return "/" + text.strip("/")


# --- where the UI is -----------------------------------------------------------------------

def is_control_ui_root(path: Path) -> bool:
    return (path / "index.html").is_file()


def candidate_roots(cwd: Path | None = None, env=None, *,
                    package_dir: Path | None = None,
                    global_dirs: tuple[Path, ...] = GLOBAL_NODE_MODULES) -> list[Path]:
    """The automatic places, in order (see the module docstring)."""
    env = os.environ if env is None else env
    cwd = Path.cwd() if cwd is None else cwd
    package_dir = Path(__file__).resolve().parents[2] if package_dir is None else package_dir
    out: list[Path] = []
    for base in (cwd, package_dir):
        for d in (base, *base.parents):
            out.append(d / CONTROL_UI_DIR)
    ref = Path(env.get("KRABFAST_REFERENCE_DIR") or "~/.cache/krabfast/reference").expanduser()
    out.append(ref / CONTROL_UI_DIR)
    out.extend(d / "openclaw" / "dist" / "control-ui" for d in global_dirs)
    return list(dict.fromkeys(out))


def find_control_ui_root(configured: str | None = None, **kw) -> Path | None:
    """The configured root (returned even when it holds no index.html: the UI then says
    its assets are missing, as the reference does), else the first automatic candidate that
    holds an index.html, else None."""
    if configured:
        return Path(configured).expanduser().resolve()
    for candidate in candidate_roots(**kw):
        if is_control_ui_root(candidate):
            return candidate.resolve()
    return None


# --- pieces of the answers -----------------------------------------------------------------

_HTML_RANGES = frozenset({"text/html", "application/xhtml+xml", "text/*", "*/*"})


def accepts_html(request: Request) -> bool:
    """No (or an empty) Accept, or a range covering HTML with q > 0 (text/html, text/*,
    */*, application/xhtml+xml): what the reference answers with index.html (live:
    `application/json` and `*/*;q=0` get 404, `application/json, */*` the page)."""
    accept = request.header("accept").strip()
    if not accept:
        return True
    for item in accept.split(","):
        media, *params = item.split(";")
        if media.strip().lower() not in _HTML_RANGES:
            continue
        q = 1.0
        for param in params:
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q > 0:
            return True
    return False


def script_hashes(html: str) -> list[str]:
    """`'sha256-...'` for every inline <script> (one without src), in document order."""
    out = []
    for m in _SCRIPT.finditer(html):
        if _SRC_ATTR.search(m.group(1)):
            continue
        digest = hashlib.sha256(m.group(2).encode()).digest()
        out.append(f"'sha256-{base64.b64encode(digest).decode()}'")
    return out


def csp_header(hashes: list[str] = (), host: str = "", *, wasm: bool = False) -> str:
    """The reference's Content-Security-Policy. `host` (a request's Host, HTML documents
    only) lets the page reach that host's other ports; anything unusual in it is dropped."""
    script = " ".join(["script-src 'self'", *hashes, *(["'wasm-unsafe-eval'"] if wasm else [])])
    connect = _CONNECT_SRC
    hostname = _host_name(host)
    if hostname:
        connect += f" http://{hostname}:* https://{hostname}:*"
    return "; ".join([*_CSP_HEAD, script, *_CSP_TAIL, connect])


def _host_name(host: str) -> str:
    host = host.strip()
    if host.startswith("["):
        name = host[:host.find("]") + 1] if "]" in host else ""
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return name if name and _HOSTNAME.fullmatch(name) else ""


_PLAIN_CSP = csp_header()  # what every non-HTML answer carries


def rewrite_index(text: str, base_path: str, build_id: str, *, terminal: bool = False) -> str:
    """index.html as the reference serves it: the bootstrap attributes on <html> (a build id
    already there is replaced), asset links under the base path, root files versioned."""
    attrs = (f' data-openclaw-control-ui-base-path="{html_lib.escape(base_path)}"'
             f' data-openclaw-terminal-enabled="{"true" if terminal else "false"}"'
             f' data-openclaw-control-ui-build-id="{html_lib.escape(build_id)}"')
    m = _HTML_TAG.search(text)
    if m:
        rest = _BUILD_ID_ATTR.sub("", m.group(0)[5:])
        text = text[:m.start()] + "<html" + attrs + rest + text[m.end():]
    for attr in ("src", "href"):
        text = text.replace(f'{attr}="./assets/', f'{attr}="{base_path}/assets/')
    version = quote(build_id, safe="")
    for name in ROOT_PUBLIC:
        for attr in ("src", "href"):
            text = text.replace(f'{attr}="./{name}"', f'{attr}="{base_path}/{name}?v={version}"')
    return text


def shipped_build_id(index_html: str) -> str | None:
    m = _BUILD_ID_ATTR.search(index_html)
    return html_lib.unescape(m.group(1)) if m and m.group(1) else None


class _Index:
    """index.html rewritten once per file version: body, gzip form and the CSP's hashes."""
    __slots__ = ("source", "body", "gzipped", "hashes", "build_id")

    def __init__(self, source: CachedFile, base_path: str) -> None:
        text = source.data.decode("utf-8", errors="replace")
        self.source = source
        # The shipped build id (the UI's service worker and ?v= links key on it); a build
        # without one gets one from its content.
        self.build_id = shipped_build_id(text) or "krabfast-" + source.etag.strip('"')
        rewritten = rewrite_index(text, base_path, self.build_id)
        self.body = rewritten.encode()
        self.hashes = script_hashes(rewritten)
        # As the reference: gzip level 6 made on the fly (here once per version).
        co = zlib.compressobj(6, zlib.DEFLATED, 31)
        self.gzipped = co.compress(self.body) + co.flush()


# --- the route -----------------------------------------------------------------------------

class ControlUi:
    """One route for the whole Control UI (see the module docstring)."""

    def __init__(self, root: Path | None, *, base_path: str = "",
                 token_check: Callable[[str], bool] | None = None, auth_required: bool = True,
                 device_token_check: Callable[[str], bool] | None = None,
                 server_version: str = "", assistant_name: str = "Assistant",
                 cache: FileCache | None = None) -> None:
        self.root = root
        self.base_path = normalize_base_path(base_path)
        self.token_check = token_check
        self.device_token_check = device_token_check
        self.auth_required = auth_required
        self.server_version = server_version
        self.assistant_name = assistant_name
        self.cache = cache if cache is not None else FileCache()
        self._index: _Index | None = None
        self._config_paths = {f"{self.base_path}/{CONFIG_JSON}",
                              f"{self.base_path}/__openclaw/{CONFIG_JSON}"}
        if not self.base_path:
            self._config_paths.add(f"/__openclaw__/{CONFIG_JSON}")

    # classification: None = not the Control UI's (the next route, or the app's 404)
    def __call__(self, request: Request) -> Response | None:
        path = request.path
        if request.method not in ("GET", "HEAD") or self._reserved(path):
            return None
        bp = self.base_path
        if bp:
            if path == bp:
                query = "?" + request.query if request.query else ""
                return Response(302, b"", headers=[("Location", quote(bp) + "/" + query)])
            if not path.startswith(bp + "/"):
                return None
        elif path == "/ui" or path.startswith("/ui/"):
            return None
        if path in self._config_paths:
            return self.config_json(request)
        if self.root is None:
            return self.missing_page(request) if path[len(bp):] in ("/", "/index.html") else None
        return self.serve_path(request, path[len(bp):])

    @staticmethod
    def _reserved(path: str) -> bool:
        if path in PROBE_PATHS or path.startswith(RESERVED_STARTS):
            return True
        return any(path == p or path.startswith(p + "/") for p in RESERVED_PREFIXES)

    def serve_path(self, request: Request, rel_path: str) -> Response:
        if "\x00" in rel_path or "\\" in rel_path or any(
                seg in ("..", ".") for seg in rel_path.split("/")):
            return self.not_found()
        rel = rel_path.lstrip("/")
        if "/assets/" in rel_path:
            rel = "assets/" + rel_path.split("/assets/", 1)[1]
        elif rel.startswith("__openclaw__/") and rel[len("__openclaw__/"):] in ROOT_PUBLIC:
            rel = rel[len("__openclaw__/"):]
        if rel in ("", "index.html"):
            return self.index_response(request)
        ext = os.path.splitext(rel)[1].lower()
        if rel.endswith((".br", ".gz")):
            return self.not_found()  # siblings are chosen by Accept-Encoding, never by name
        resolved = resolve_inside(self.root, rel)
        entry = self.cache.get(resolved) if resolved is not None else None
        if entry is not None:
            return self.file_response(request, entry, rel)
        if ext in STATIC_EXTENSIONS or not accepts_html(request):
            return self.not_found()
        return self.index_response(request)  # the SPA's deep link

    def not_found(self) -> Response:
        return Response.text(404, headers=self._headers())

    def _headers(self, *more: tuple[str, str], hashes=(), host: str = "") -> list[tuple[str, str]]:
        csp = csp_header(list(hashes), host) if hashes or host else _PLAIN_CSP
        return [*more, *SECURITY_HEADERS, ("Content-Security-Policy", csp)]

    def _load_index(self) -> _Index | None:
        resolved = resolve_inside(self.root, "index.html")
        entry = self.cache.get(resolved) if resolved is not None else None
        if entry is None:
            return None
        if self._index is None or self._index.source is not entry:
            self._index = _Index(entry, self.base_path)
        return self._index

    def index_response(self, request: Request) -> Response:
        index = self._load_index()
        if index is None:
            return Response.text(
                503, f"Control UI assets not found at {self.root}: point krabfast at an "
                     "installed openclaw package's dist/control-ui with --control-ui-root DIR "
                     "(or gateway.controlUi.root)",
                headers=[("Cache-Control", "no-store"), *self._headers()])
        headers = self._headers(("Cache-Control", NO_CACHE), ("Vary", "Accept-Encoding"),
                                hashes=index.hashes, host=request.header("host"))
        coding = choose_encoding(request.header("accept-encoding"), ["gzip", "identity"])
        if coding is None:
            return Response.text(406, headers=[("Cache-Control", "no-store"), *self._headers()])
        if coding == "gzip":
            return Response(200, index.gzipped, "text/html; charset=utf-8",
                            headers=[("Content-Encoding", "gzip"), *headers])
        return Response(200, index.body, "text/html; charset=utf-8", headers=headers)

    def file_response(self, request: Request, entry: CachedFile, rel: str) -> Response:
        if rel.startswith("assets/"):
            cache_control = IMMUTABLE
        else:
            index = self._load_index()
            version = parse_qs(request.query).get("v", [None])[0]
            cache_control = IMMUTABLE if index and version == index.build_id else NO_CACHE
        last_modified = entry.last_modified()
        common = (("Cache-Control", cache_control),
                  ("Last-Modified", http_date(last_modified)), ("Vary", "Accept-Encoding"))
        inm = request.header("if-none-match")
        ims = request.header("if-modified-since")
        # The reference's rule: no ETags, so If-None-Match means 304 only for "*", and any
        # other value sends the body; otherwise If-Modified-Since decides.
        if inm.strip() == "*" or (not inm and ims and not modified_since(ims, last_modified)):
            return Response(304, b"", headers=self._headers(*common))
        chosen = encoded_body(request, entry, rel, siblings=self.cache, root=self.root,
                              dynamic_gzip=False)
        if chosen is None:
            return Response.text(406, headers=self._headers(("Cache-Control", "no-store"),
                                                            ("Vary", "Accept-Encoding")))
        coding, body, _etag = chosen
        more = [("Content-Encoding", coding)] if coding != "identity" else []
        ctype = REFERENCE_TYPES.get(os.path.splitext(rel)[1].lower()) or content_type(rel)
        return Response(200, body, ctype, headers=self._headers(*common, *more))

    # --- control-ui-config.json ---------------------------------------------------------
    def authorized(self, request: Request) -> bool:
        if not self.auth_required:
            return True
        scheme, _, credential = request.header("authorization").strip().partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            return False
        # The UI sends the shared token, and after its first connect its device token too.
        return any(check is not None and check(credential)
                   for check in (self.token_check, self.device_token_check))

    def config_json(self, request: Request) -> Response:
        import orjson

        if not self.authorized(request):
            return Response.json(401, b'{"error":{"message":"Unauthorized","type":"unauthorized"}}',
                                 headers=self._headers())
        body = {
            "basePath": self.base_path,
            "assistantName": self.assistant_name,
            "assistantAvatar": (self.assistant_name[:1] or "A").upper(),
            "assistantAvatarSource": None, "assistantAvatarStatus": None,
            "assistantAvatarReason": None, "assistantAgentId": "main",
            "serverVersion": self.server_version,
            # no serverBuildId: the reference sends it only for its own bundled UI build
            "embedSandbox": "scripts", "allowExternalEmbedUrls": False,
            "automaticallyFetchFavicons": True, "communityInvite": True,
            # krabfast serves no terminal and no CLI agents: the UI hides them
            "terminalEnabled": False, "cliAgentsEnabled": False,
            "pluginAssetsRequireAuth": self.auth_required, "pluginFrameGrants": [],
        }
        return Response.json(200, orjson.dumps(body),
                             headers=self._headers(("Cache-Control", NO_CACHE)))

    # --- no UI installed ----------------------------------------------------------------
    def missing_page(self, request: Request) -> Response:
        page = MISSING_PAGE.format(webchat="/webchat/").encode()
        return Response(200, page, "text/html; charset=utf-8", headers=[
            ("Cache-Control", NO_CACHE), ("X-Frame-Options", "DENY"),
            ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")])


MISSING_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>krabfast gateway</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:40em;margin:3em auto;padding:0 1em}}
code{{background:#8882;padding:0 .2em}}</style></head>
<body><h1>krabfast gateway</h1>
<p>Chat with the gateway in <a href="{webchat}">WebChat</a>.</p>
<p>The OpenClaw Control UI is not installed here. To serve it at this address, start the
gateway with <code>krabfast gateway --control-ui-root DIR</code>, where DIR is an installed
<code>openclaw</code> package's <code>dist/control-ui</code> (or run <code>npm install
openclaw</code> in the directory you start krabfast from).</p>
</body></html>
"""


def control_ui_routes(config, *, token_check: Callable[[str], bool] | None = None,
                      device_token_check: Callable[[str], bool] | None = None,
                      assistant_name: str = "Assistant",
                      root: Path | None = None) -> list[Route]:
    """The Control UI's routes for the app (to go after every other route), from
    GatewayConfig's control_ui_* settings; [] when gateway.controlUi.enabled is false.
    `token_check(bearer)`: whether a bearer token is the gateway's credential, and
    `device_token_check(bearer)` whether it is a paired device's operator token (either
    opens control-ui-config.json, as on the reference; with auth mode "none" nothing is
    asked). `assistant_name`: the agent's display name the bootstrap JSON gives."""
    if not getattr(config, "control_ui_enabled", True):
        return []
    from krabfast import __version__

    if root is None:
        root = find_control_ui_root(getattr(config, "control_ui_root", None))
    if root is None:
        log.info("Control UI: not found (pass --control-ui-root DIR); / links to /webchat/")
    else:
        log.info("Control UI: serving %s at %s/", root,
                 normalize_base_path(getattr(config, "control_ui_base_path", "")))
    return [ControlUi(root, base_path=getattr(config, "control_ui_base_path", ""),
                      token_check=token_check, device_token_check=device_token_check,
                      auth_required=getattr(config, "auth_mode", "token") != "none",
                      server_version=__version__, assistant_name=assistant_name)]
