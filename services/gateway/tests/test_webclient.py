"""The web client served by the gateway: page, files, policy, vendored stompjs and sockjs-client,
/dev/token."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from asgi_lifespan import LifespanManager

from gateway.app import create_app
from gateway.settings import Settings
from gateway.webclient import STATIC_DIR, content_security_policy

from .test_gateway_proxy import free_port

REPO = Path(__file__).resolve().parents[3]
VENDOR = STATIC_DIR / "vendor"


@contextlib.asynccontextmanager
async def gateway(
    issuer_keys: Any, tmp_path: Path, **overrides: Any
) -> AsyncIterator[httpx.AsyncClient]:
    public = tmp_path / "issuer.pem"
    public.write_bytes(issuer_keys.public_pem)
    nowhere = f"http://127.0.0.1:{free_port()}"
    values: dict[str, Any] = {
        "session_svc_url": nowhere,
        "message_svc_url": nowhere,
        "jwt_public_key_file": str(public),
        **overrides,
    }
    app = create_app(Settings(**values))
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw.test:8080") as c:
            yield c


class PageParts(HTMLParser):
    """What a page loads and anything that a strict CSP would block."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.links: list[dict[str, str | None]] = []
        self.inline_scripts: list[str] = []
        self.inline_handlers: list[str] = []
        self.style_attributes: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        self.inline_handlers += [k for k in named if k.startswith("on")]
        if "style" in named:
            self.style_attributes.append(tag)
        if tag == "script":
            self.scripts.append(named)
            self._in_script = "src" not in named
        elif tag == "link":
            self.links.append(named)
        elif tag == "style":
            self.inline_scripts.append("<style>")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts.append(data.strip()[:40])


def policy(header: str) -> dict[str, list[str]]:
    parts = (p.strip().split() for p in header.split(";") if p.strip())
    return {p[0]: p[1:] for p in parts}


async def test_index_is_served_with_a_strict_content_security_policy(
    issuer_keys: Any, tmp_path: Path
) -> None:
    async with gateway(issuer_keys, tmp_path) as gw:
        page = await gw.get("/")
        head = await gw.head("/")
    assert page.status_code == 200
    assert head.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["x-frame-options"] == "DENY"
    csp = policy(page.headers["content-security-policy"])
    assert csp["default-src"] == ["'none'"]
    assert csp["script-src"] == ["'self'"]
    assert csp["style-src"] == ["'self'"]
    assert csp["connect-src"] == ["'self'", "ws://gw.test:8080", "wss://gw.test:8080"]
    assert csp["frame-ancestors"] == ["'none'"]
    assert "unsafe" not in page.headers["content-security-policy"]

    parts = PageParts()
    parts.feed(page.text)
    assert parts.inline_scripts == []
    assert parts.inline_handlers == []
    assert parts.style_attributes == []
    sources = [s["src"] for s in parts.scripts]
    assert sources == [
        "/static/vendor/stomp.umd.min.js",
        "/static/vendor/sockjs.min.js",
        "/static/app.js",
    ]
    assert {"type": "module", "src": "/static/app.js"} in parts.scripts
    assert all(not s.startswith(("http:", "https:", "//")) for s in sources if s)


async def test_every_file_the_page_and_its_modules_load_is_served(
    issuer_keys: Any, tmp_path: Path
) -> None:
    async with gateway(issuer_keys, tmp_path) as gw:
        parts = PageParts()
        parts.feed((await gw.get("/")).text)
        wanted = [s["src"] for s in parts.scripts] + [link["href"] for link in parts.links]
        # ES module imports, followed from app.js.
        for module in sorted(STATIC_DIR.glob("*.js")):
            imports = re.findall(r'^import .* from "(\./[\w.-]+\.js)";$', module.read_text(), re.M)
            wanted += [f"/static/{name[2:]}" for name in imports]
        answers = {path: await gw.get(path) for path in wanted if path}
    assert "/static/api.js" in answers
    assert "/static/live.js" in answers
    for path, answer in answers.items():
        assert answer.status_code == 200, path
        assert answer.headers["content-security-policy"], path
        if path.endswith(".js"):
            assert answer.headers["content-type"] == "text/javascript; charset=utf-8", path
        elif path.endswith(".css"):
            assert answer.headers["content-type"] == "text/css; charset=utf-8", path


async def test_static_files_revalidate_and_stay_inside_their_folder(
    issuer_keys: Any, tmp_path: Path
) -> None:
    async with gateway(issuer_keys, tmp_path) as gw:
        first = await gw.get("/static/app.js")
        again = await gw.get("/static/app.js", headers={"if-none-match": first.headers["etag"]})
        escape = await gw.get("/static/%2e%2e/settings.py")
        missing = await gw.get("/static/nope.js")
    assert first.headers["cache-control"] == "no-cache"
    assert again.status_code == 304
    assert escape.status_code == 404
    assert missing.status_code == 404


def test_the_policy_never_repeats_a_strange_host() -> None:
    assert "connect-src 'self' ws://a.example wss://a.example;" in content_security_policy(
        "a.example"
    )
    assert "ws://[::1]:8080" in content_security_policy("[::1]:8080")
    for host in ("evil; script-src *", "a.example/x", "", None, "a b"):
        assert "connect-src 'self';" in content_security_policy(host)


def test_user_content_is_never_parsed_as_html() -> None:
    for module in STATIC_DIR.glob("*.js"):
        source = module.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in source, f"{module.name} uses {sink}"


@pytest.mark.parametrize(
    ("manifest_name", "package_name", "licence", "licence_marks", "exports"),
    [
        (
            "stompjs.json",
            "@stomp/stompjs",
            "Apache-2.0",
            ("Apache License", "Version 2.0"),
            b"StompJs",
        ),
        (
            "sockjs.json",
            "sockjs-client",
            "MIT",
            ("The MIT License", "The sockjs-client Authors"),
            b".SockJS=",
        ),
    ],
)
async def test_vendored_bundles_are_the_pinned_packages_with_their_licences(
    issuer_keys: Any,
    tmp_path: Path,
    manifest_name: str,
    package_name: str,
    licence: str,
    licence_marks: tuple[str, ...],
    exports: bytes,
) -> None:
    manifest = json.loads((VENDOR / manifest_name).read_text())
    bundle = (VENDOR / manifest["file"]).read_bytes()
    assert manifest["name"] == package_name
    assert hashlib.sha256(bundle).hexdigest() == manifest["sha256"]
    assert exports in bundle
    licence_text = (VENDOR / manifest["licenseFile"]).read_text()
    assert manifest["license"] == licence
    for mark in licence_marks:
        assert mark in licence_text
    package = json.loads((REPO / "web" / "package.json").read_text())
    lock = json.loads((REPO / "web" / "package-lock.json").read_text())
    assert package["dependencies"][package_name] == manifest["version"]
    assert lock["packages"][f"node_modules/{package_name}"]["version"] == manifest["version"]
    async with gateway(issuer_keys, tmp_path) as gw:
        served = await gw.get(f"/static/vendor/{manifest['file']}")
        served_licence = await gw.get(f"/static/vendor/{manifest['licenseFile']}")
    assert served.content == bundle
    assert served.headers["content-type"] == "text/javascript; charset=utf-8"
    assert served_licence.status_code == 200
    assert served_licence.text == licence_text


def test_sockjs_is_the_release_the_page_expects() -> None:
    """The bundle names its release in its first line; the client restricts its transports
    to those that need no iframe or script tag (the CSP allows neither)."""
    manifest = json.loads((VENDOR / "sockjs.json").read_text())
    first_line = (VENDOR / manifest["file"]).read_bytes().split(b"\n", 1)[0]
    assert f"sockjs-client v{manifest['version']} ".encode() in first_line
    live = (STATIC_DIR / "live.js").read_text()
    listed = re.search(r"SOCKJS_TRANSPORTS = \[([^\]]*)\]", live)
    assert listed is not None
    transports = re.findall(r'"([\w-]+)"', listed.group(1))
    assert transports
    assert set(transports) <= {"websocket", "xhr-streaming", "xhr-polling", "eventsource"}


async def test_dev_token_does_not_exist_unless_configured(issuer_keys: Any, tmp_path: Path) -> None:
    async with gateway(issuer_keys, tmp_path) as gw:
        answer = await gw.post("/dev/token", json={"email": "alice@example.com"})
    assert Settings().dev_token_url is None
    assert answer.status_code == 404


async def test_dev_token_forwards_to_the_flairbit_stand_in(
    issuer_keys: Any, tmp_path: Path, flairbit: Any
) -> None:
    url = f"{flairbit.url}/dev/token"
    async with gateway(issuer_keys, tmp_path, dev_token_url=url) as gw:
        answer = await gw.post("/dev/token", json={"email": " Alice.Web@Example.com "})
        extra = await gw.post("/dev/token", json={"email": "a@example.com", "ttlSeconds": -5})
        shape = await gw.post("/dev/token", json={"mail": "a@example.com"})
        junk = await gw.post("/dev/token", content=b"{", headers={"content-type": "text/plain"})
        refused = await gw.post("/dev/token", json={"email": "no-at-sign"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    assert set(answer.json()) == {"token"}
    public = (Path(flairbit.key_dir) / "flairbit_dev_public.pem").read_bytes()
    claims = jwt.decode(answer.json()["token"], public, algorithms=["RS256"], audience="chat")
    assert claims["sub"] == "alice.web@example.com"
    # Only the email is forwarded: a caller cannot ask for odd tokens through the gateway.
    assert extra.status_code == 422
    assert "ttlSeconds" in extra.json()["detail"]
    assert shape.status_code == 422
    assert junk.status_code == 400
    # The stand-in's own refusal comes back as it answered it.
    assert refused.status_code == 422
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["code"] == "INVALID_INPUT"


async def test_dev_token_issuer_down_is_503(issuer_keys: Any, tmp_path: Path) -> None:
    down = f"http://127.0.0.1:{free_port()}/dev/token"
    async with gateway(issuer_keys, tmp_path, dev_token_url=down) as gw:
        answer = await gw.post("/dev/token", json={"email": "alice@example.com"})
    assert answer.status_code == 503
    assert answer.json()["code"] == "DEPENDENCY_UNAVAILABLE"


@pytest.mark.parametrize("path", ["/index.html", "/static/", "/static"])
async def test_no_directory_listing_or_second_copy_of_the_page(
    issuer_keys: Any, tmp_path: Path, path: str
) -> None:
    async with gateway(issuer_keys, tmp_path) as gw:
        answer = await gw.get(path, follow_redirects=True)
    assert answer.status_code == 404
