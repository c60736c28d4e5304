"""The real Node libraries (@segment/analytics-node, posthog-node from npm) against the server.

Skipped, with the reason, when node/npm are missing or the packages cannot be installed. The packages are
installed once into ``~/.cache/kpilot-tests/node`` (or ``$KPILOT_TEST_NODE_DIR``) and reused.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server_helpers import ThreadServer, make_workspace, start_thread_server

PACKAGES = ["@segment/analytics-node@3.1.0", "posthog-node@5.70.0"]

SCRIPT = r"""
const { Analytics } = require('@segment/analytics-node');
const { PostHog } = require('posthog-node');
const [url, segKey, phKey] = process.argv.slice(2);
const ts = new Date('2024-03-01T10:00:00Z');
(async () => {
  const errors = [];
  const a = new Analytics({ writeKey: segKey, host: url, path: '/v1/batch', flushAt: 20, flushInterval: 50, maxRetries: 0 });
  a.on('error', (e) => errors.push('segment: ' + JSON.stringify(e && (e.reason ? String(e.reason) : e))));
  a.track({ anonymousId: 'n-anon', event: 'Node Viewed', timestamp: ts });
  a.identify({ userId: 'n1', anonymousId: 'n-anon', traits: { plan: 'pro' }, timestamp: ts });
  a.page({ userId: 'n1', name: 'Home', timestamp: ts });
  a.alias({ previousId: 'n-anon2', userId: 'n1', timestamp: ts });
  a.track({ anonymousId: 'n-anon2', event: 'Node Viewed', timestamp: ts });
  await a.closeAndFlush();

  const ph = new PostHog(phKey, { host: url, flushAt: 20, flushInterval: 50, fetchRetryCount: 0 });
  ph.on('error', (e) => errors.push('posthog: ' + String(e)));
  ph.capture({ distinctId: 'pn-anon', event: '$pageview', timestamp: ts });
  ph.identify({ distinctId: 'pn1', properties: { plan: 'team' } });
  ph.alias({ distinctId: 'pn1', alias: 'pn-anon' });
  ph.capture({ distinctId: 'pn1', event: 'purchase', properties: { amount: 5 }, timestamp: ts });
  await ph.shutdown();

  const bad = new Analytics({ writeKey: 'kp_wrong', host: url, path: '/v1/batch', flushAt: 1, maxRetries: 0 });
  const badErrors = [];
  bad.on('error', (e) => badErrors.push(e && e.reason ? String(e.reason) : String(e)));
  bad.track({ userId: 'x', event: 'x' });
  await bad.closeAndFlush();
  console.log(JSON.stringify({ errors, badErrors }));
})().catch((e) => { console.log(JSON.stringify({ errors: ['crash: ' + String(e)], badErrors: [] })); });
"""


def _node_dir() -> Path:
    default = Path.home() / ".cache" / "kpilot-tests" / "node"
    return Path(os.environ.get("KPILOT_TEST_NODE_DIR", default))


@pytest.fixture(scope="module")
def node_modules() -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node/npm not installed: the Node client tests need them")
    root = _node_dir()
    marker = root / "installed.json"
    if not marker.exists() or json.loads(marker.read_text()) != PACKAGES:
        root.mkdir(parents=True, exist_ok=True)
        (root / "package.json").write_text('{"name": "kpilot-node-client-tests", "private": true}')
        proc = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", *PACKAGES],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if proc.returncode != 0:
            pytest.skip(f"npm install of {', '.join(PACKAGES)} failed: {proc.stderr.strip()[-300:]}")
        marker.write_text(json.dumps(PACKAGES))
    return root


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ThreadServer, dict[str, str]]]:
    keys = make_workspace(tmp_path / "ws", ("alpha", "beta"))
    server = start_thread_server(tmp_path / "ws")
    yield server, keys
    server.stop()


def _events(server: ThreadServer, project: str) -> list[tuple[str, str]]:
    pid = server.ws.project(project).id
    rows = server.sql("SELECT event, distinct_id FROM events WHERE project_id = ?", [pid])
    return sorted((r[0], r[1]) for r in rows)


def _dau(server: ThreadServer, project: str, event: str) -> int:
    spec = {
        "kind": "trends",
        "date_from": "2024-03-01",
        "date_to": "2024-03-01",
        "math": "dau",
        "event": event,
    }
    return int(server.query(project, spec)["series"][0]["value"])


def test_node_clients(
    node_modules: Path, served: tuple[ThreadServer, dict[str, str]], tmp_path: Path
) -> None:
    server, keys = served
    script = node_modules / "send.js"
    script.write_text(SCRIPT)
    proc = subprocess.run(
        ["node", str(script), server.url, keys["alpha"], keys["beta"]],
        cwd=node_modules,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["errors"] == []
    # the wrong key was refused, and analytics-node surfaced our 401
    assert len(out["badErrors"]) == 1 and "401" in out["badErrors"][0]

    assert _events(server, "alpha") == [
        ("$create_alias", "n1"),
        ("$identify", "n1"),
        ("$pageview", "n1"),
        ("Node Viewed", "n-anon"),
        ("Node Viewed", "n-anon2"),
    ]
    # n-anon (identify) and n-anon2 (alias) are n1: both views were one person's.
    assert _dau(server, "alpha", "Node Viewed") == 1
    beta = _events(server, "beta")
    assert [e for e in beta if e[0] in ("$pageview", "purchase")] == [
        ("$pageview", "pn-anon"),
        ("purchase", "pn1"),
    ]
    assert ("$identify", "pn1") in beta
    assert any(e[0] == "$create_alias" for e in beta)
    assert _dau(server, "beta", "$pageview") == 1
    pid = server.ws.project("beta").id
    props = server.sql(
        """SELECT key, value FROM person_properties pp JOIN person_distinct_ids d USING (project_id, person_id)
           WHERE pp.project_id = ? AND d.distinct_id = 'pn-anon'""",
        [pid],
    )
    assert props == [("plan", "team")]
