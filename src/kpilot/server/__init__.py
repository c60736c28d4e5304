"""kpilot's HTTP server: ingestion for Segment- and PostHog-compatible clients, and the local API.

Import :func:`kpilot.server.app.create_app` for the ASGI app; ``kpilot serve`` runs it under uvicorn.
"""
