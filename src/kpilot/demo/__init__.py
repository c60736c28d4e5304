"""``kpilot demo``: a generated product (persons, events, and whatever other registered generators add)
written into a fresh workspace, followed by its key metrics. See docs/demo.md."""
