"""Storage: the database layer (engines, sessions, migrations), the ORM models, and the
one retry policy for database calls that fail for a passing reason."""
