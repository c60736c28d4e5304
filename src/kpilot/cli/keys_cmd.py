"""``kpilot keys create|list|revoke``: a project's keys, write keys for ingestion (the default kind) and
secret keys for the REST API.

These commands use only the metadata database, so they work while ``kpilot serve`` runs.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from kpilot.cli.common import JsonOpt, ProjectOpt, console, emit_json, fail, state
from kpilot.errors import KpilotError
from kpilot.keys import KeyKind, create_key, list_keys, open_metadata, project_by_name, revoke_key

app = typer.Typer(
    help="Project keys: write keys for tracking clients (events), secret keys for the REST API (imports).",
    no_args_is_help=True,
)


@app.command("create")
def create(
    ctx: typer.Context,
    project: ProjectOpt = None,
    name: Annotated[str, typer.Option("--name", help="A label, e.g. where the key is used")] = "",
    kind: Annotated[
        KeyKind,
        typer.Option(
            "--kind",
            help="write: public, sends events (SDKs, browsers). "
            "secret: server-to-server REST API (imports); keep it out of browsers and apps.",
        ),
    ] = KeyKind.WRITE,
    as_json: JsonOpt = False,
) -> None:
    """Create a key (a write key unless --kind secret); the key is printed once and cannot be shown again."""
    st = state(ctx)
    try:
        meta = open_metadata(st.home, st.metadata_url)
        try:
            new = create_key(meta, project_by_name(meta, project or st.project), name, kind)
        finally:
            meta.close()
    except KpilotError as exc:
        raise fail(exc, as_json) from exc
    if as_json:
        emit_json({**new.info.as_dict(), "key": new.key})
        return
    label = "Secret key" if new.info.kind is KeyKind.SECRET else "Write key"
    console.print(f"{label} for project [bold]{new.info.project}[/] (id {new.info.id}):")
    console.print(new.key, highlight=False, soft_wrap=True)
    console.print("Store it now: it is kept only hashed and cannot be shown again.")
    if new.info.kind is KeyKind.SECRET:
        console.print(
            "It authorises REST imports into this project: keep it on servers, never in a web page or app."
        )


@app.command("list")
def list_(ctx: typer.Context, project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """List keys (prefix only) of one project, or of all when several exist and none is chosen."""
    st = state(ctx)
    try:
        meta = open_metadata(st.home, st.metadata_url)
        try:
            chosen = project or st.project
            keys = list_keys(meta, project_by_name(meta, chosen) if chosen else None)
        finally:
            meta.close()
    except KpilotError as exc:
        raise fail(exc, as_json) from exc
    if as_json:
        emit_json([k.as_dict() for k in keys])
        return
    table = Table("id", "project", "kind", "prefix", "name", "created", "revoked")
    for k in keys:
        table.add_row(
            str(k.id),
            k.project,
            k.kind.value,
            k.prefix + "…",
            k.name,
            k.created_at.isoformat(timespec="seconds"),
            k.revoked_at.isoformat(timespec="seconds") if k.revoked_at else "",
        )
    console.print(table)


@app.command("revoke")
def revoke(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help="Key id, prefix, or the key itself")],
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Revoke a key: requests using it get 401 (a running server notices within a few seconds)."""
    st = state(ctx)
    try:
        meta = open_metadata(st.home, st.metadata_url)
        try:
            info = revoke_key(meta, project_by_name(meta, project or st.project), key)
        finally:
            meta.close()
    except KpilotError as exc:
        raise fail(exc, as_json) from exc
    if as_json:
        emit_json(info.as_dict())
    else:
        console.print(f"Revoked key {info.id} ({info.prefix}…) of project [bold]{info.project}[/]")
