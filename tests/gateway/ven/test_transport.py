"""The VEN's bounded HTTP exchange against a real aiohttp server on loopback: bodies counted on the wire and
after inflation (streamed, never inflated first), redirects followed only on the VTN's own origin."""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from gateway.config.models import VenLimits
from gateway.exceptions import HostileInput
from gateway.ven.oadr20b.transport import _origin, post_bounded, session_options
from tests.hostile_vtn import gzip_bomb, serving

LIMITS = VenLimits(max_wire_bytes=64 * 1024, max_body_bytes=256 * 1024)


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, list[str]]]:
    seen: list[str] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        seen.append(name)
        if name == "ok":
            return web.Response(body=b"<ok/>")
        if name == "gzip-ok":
            z = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
            return web.Response(body=z.compress(b"<ok/>" * 100) + z.flush(), headers={"Content-Encoding": "gzip"})
        if name == "bomb":
            return web.Response(body=gzip_bomb(8 << 20), headers={"Content-Encoding": "gzip"})
        if name == "big":
            response = web.StreamResponse()
            await response.prepare(request)
            for _ in range(100):
                await response.write(b"x" * 65536)
            return response
        if name == "same-origin":
            raise web.HTTPTemporaryRedirect("/p/ok")
        if name == "loop":
            raise web.HTTPTemporaryRedirect("/p/loop")
        if name == "elsewhere":
            raise web.HTTPFound(f"http://localhost:{request.url.port}/p/ok")
        if name == "to-http":
            raise web.HTTPPermanentRedirect(f"http://127.0.0.1:{request.url.port}/p/ok")
        raise web.HTTPNotFound()

    app = web.Application()
    app.router.add_post("/p/{name}", handle)
    async with serving(app) as port:
        yield f"http://127.0.0.1:{port}/p", seen


async def post(url: str) -> bytes:
    async with aiohttp.ClientSession(**session_options()) as http:  # type: ignore[arg-type]
        return (await post_bounded(http, url, "<x/>", LIMITS)).body


async def test_plain_and_gzip_bodies_are_read(server: tuple[str, list[str]]) -> None:
    url, _ = server
    assert await post(f"{url}/ok") == b"<ok/>"
    assert await post(f"{url}/gzip-ok") == b"<ok/>" * 100


@pytest.mark.parametrize("name", ["bomb", "big"])
async def test_a_body_past_the_limits_is_cut_off(server: tuple[str, list[str]], name: str) -> None:
    url, _ = server
    with pytest.raises(HostileInput) as caught:
        await post(f"{url}/{name}")
    assert caught.value.kind == "too_large"


async def test_a_same_origin_redirect_is_followed(server: tuple[str, list[str]]) -> None:
    url, seen = server
    assert await post(f"{url}/same-origin") == b"<ok/>"
    assert seen == ["same-origin", "ok"]


@pytest.mark.parametrize("name", ["elsewhere", "loop"])
async def test_no_redirect_off_the_origin_and_no_endless_chain(server: tuple[str, list[str]], name: str) -> None:
    url, seen = server
    with pytest.raises(HostileInput) as caught:
        await post(f"{url}/{name}")
    assert caught.value.kind == "redirect" and "ok" not in seen


def test_https_never_goes_to_http() -> None:
    assert _origin(URL("https://vtn.example:443/a")) != _origin(URL("http://vtn.example:443/a"))
    assert _origin(URL("https://VTN.example/a")) == _origin(URL("https://vtn.example:443/b"))
