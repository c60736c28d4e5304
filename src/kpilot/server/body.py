"""Reading request bodies the way tracking clients send them.

A body may be gzip-compressed, announced by ``Content-Encoding: gzip`` or not announced at all (posthog-js
sends gzip as ``text/plain``): the magic bytes ``1f 8b`` are enough. Older browser clients post a form
``data=<JSON or base64 JSON>``. The size limit applies to the decompressed body, and decompression stops as
soon as it is exceeded, so a small "gzip bomb" cannot make the server allocate more than the limit.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from typing import Any
from urllib.parse import parse_qs

import orjson
from starlette.requests import Request

from kpilot.server.errors import IngestError

__all__ = ["decode_json", "read_body"]

_GZIP_MAGIC = b"\x1f\x8b"


def _too_large(limit: int) -> IngestError:
    return IngestError(400, "request_too_large", f"request body is larger than {limit} bytes")


async def read_body(request: Request, limit: int) -> bytes:
    """The decompressed body; 400 ``request_too_large`` past ``limit`` bytes, 400 for bad encodings."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    raw = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding in ("gzip", "x-gzip") or raw[:2] == _GZIP_MAGIC:
        return _gunzip(raw, limit)
    if encoding == "deflate":
        return _inflate(zlib.decompressobj(), raw, limit)
    if encoding not in ("", "identity"):
        raise IngestError(400, "unsupported_encoding", f"Content-Encoding {encoding!r} is not supported")
    return raw


def _gunzip(raw: bytes, limit: int) -> bytes:
    return _inflate(zlib.decompressobj(16 + zlib.MAX_WBITS), raw, limit)


def _inflate(obj: Any, raw: bytes, limit: int) -> bytes:
    try:
        out: bytes = obj.decompress(raw, limit + 1)
    except zlib.error as exc:
        raise IngestError(400, "invalid_compression", f"body is not valid compressed data: {exc}") from exc
    if len(out) > limit or obj.unconsumed_tail:
        raise _too_large(limit)
    if not obj.eof:
        raise IngestError(400, "invalid_compression", "compressed body is truncated")
    return out


def decode_json(body: bytes, content_type: str = "", *, limit: int) -> Any:
    """Parse JSON (whatever the content type says), or a form ``data=`` field holding JSON or base64 JSON."""
    looks_json = body.lstrip()[:1] in (b"{", b"[")
    if body[:5] == b"data=" or (
        content_type.startswith("application/x-www-form-urlencoded") and not looks_json
    ):
        return _decode_form(body, limit)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise IngestError(400, "invalid_json", f"body is not valid JSON: {exc}") from exc


def _decode_form(body: bytes, limit: int) -> Any:
    try:
        fields = parse_qs(body.decode("utf-8"), strict_parsing=False)
    except UnicodeDecodeError as exc:
        raise IngestError(400, "invalid_form", "form body is not UTF-8") from exc
    data = fields.get("data")
    if not data:
        raise IngestError(400, "invalid_form", "form body has no `data` field")
    text = data[0]
    compression = (fields.get("compression") or [""])[0]
    if compression and compression not in ("base64", "gzip-js"):
        raise IngestError(400, "unsupported_encoding", f"compression {compression!r} is not supported")
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        pass
    try:
        decoded = base64.b64decode(text + "=" * (-len(text) % 4), validate=False)
    except (binascii.Error, ValueError) as exc:
        raise IngestError(400, "invalid_json", "form `data` is neither JSON nor base64 JSON") from exc
    if decoded[:2] == _GZIP_MAGIC:
        decoded = _gunzip(decoded, limit)
    try:
        return orjson.loads(decoded)
    except orjson.JSONDecodeError as exc:
        raise IngestError(400, "invalid_json", "form `data` is neither JSON nor base64 JSON") from exc
