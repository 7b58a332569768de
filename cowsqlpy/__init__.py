"""cowsqlpy: replicated SQLite (the dqlite engine) embedded in Python."""
