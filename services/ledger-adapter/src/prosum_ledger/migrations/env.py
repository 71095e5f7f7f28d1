from alembic import context

from prosum_platform.service.migrations import run_env

run_env(context, "ledger-adapter")
