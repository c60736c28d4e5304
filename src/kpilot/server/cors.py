"""CORS for the ingestion paths only, so browser SDKs on any origin can send events.

Preflight ``OPTIONS`` requests on an ingestion path get 204 with permissive headers; other requests on
those paths get ``Access-Control-Allow-Origin`` added. The admin API gets no CORS headers, so a web page
cannot call it from a browser.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kpilot.server.errors import Protocol, protocol_of

__all__ = ["IngestionCORS"]


class IngestionCORS:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or protocol_of(scope["path"]) is Protocol.API:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        origin = headers.get(b"origin")
        if origin is None:
            await self.app(scope, receive, send)
            return
        allow = [(b"access-control-allow-origin", origin), (b"vary", b"Origin")]
        if scope["method"] == "OPTIONS" and b"access-control-request-method" in headers:
            requested = headers.get(b"access-control-request-headers", b"content-type")
            await send(
                {
                    "type": "http.response.start",
                    "status": 204,
                    "headers": [
                        *allow,
                        (b"access-control-allow-methods", b"POST, GET, OPTIONS"),
                        (b"access-control-allow-headers", requested),
                        (b"access-control-allow-credentials", b"true"),
                        (b"access-control-max-age", b"86400"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {
                    **message,
                    "headers": [
                        *message.get("headers", []),
                        *allow,
                        (b"access-control-allow-credentials", b"true"),
                    ],
                }
            await send(message)

        await self.app(scope, receive, send_with_cors)
