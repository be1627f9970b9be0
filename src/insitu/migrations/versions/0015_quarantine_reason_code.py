"""quarantine reason codes, for review in bulk

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06 22:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("quarantine") as batch:
        batch.add_column(
            sa.Column(
                "reason_code", sa.String(32), nullable=False, server_default="burned-in-absent"
            )
        )
        batch.create_index("ix_quarantine_reason_code", ["reason_code"])
    # Rows from before this revision: their reason text says which kind they are.
    op.execute("UPDATE quarantine SET reason_code = 'burned-in-yes' WHERE reason LIKE '%is YES%'")
    op.execute(
        "UPDATE quarantine SET reason_code = 'pixels-unchecked' "
        "WHERE reason LIKE '%could not be checked%'"
    )


def downgrade() -> None:
    with op.batch_alter_table("quarantine") as batch:
        batch.drop_index("ix_quarantine_reason_code")
        batch.drop_column("reason_code")
