"""Collect: turn Segment- and PostHog-shaped messages into kpilot's canonical events."""
