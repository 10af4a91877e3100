"""Storage: the embedded SQLite database, its layout, migrations and the durable committer."""
