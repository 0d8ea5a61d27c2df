"""Persistence: schema, engines, migrations, change log, repositories."""
