"""Key kinds: ``api_keys.kind`` is ``write`` (public ingestion keys, all keys so far) or ``secret``.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "api_keys", sa.Column("kind", sa.String(16), nullable=False, server_default=sa.text("'write'"))
    )


def downgrade() -> None:
    # Without the column every key would be a write key: secret keys must not survive as write keys.
    op.execute(sa.text("DELETE FROM api_keys WHERE kind <> 'write'"))
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("kind")
