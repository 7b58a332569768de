"""What the cowsql engine and driver can do, for SQLAlchemy's compliance suite.

Two kinds of entries: SQLite's SQL, which the engine runs (SQLAlchemy's suite
defaults assume less; these follow what SQLite 3.40 does), and what the
replicated engine or its driver cannot do, each with its reason.
"""

from __future__ import annotations

from sqlalchemy.testing import exclusions
from sqlalchemy.testing.requirements import SuiteRequirements

NO_ATTACH = "one database per connection: the engine has no ATTACH, so no schemas"
POOLED_SESSIONS = (
    "per-connection state (TEMP tables and views): another pooled connection does not see it"
)
NO_UDF = "functions are the engine's: REGEXP (a Python function in sqlite3) is not there"


def _closed(reason: str) -> exclusions.compound:
    return exclusions.closed(reason)


class SQLiteRequirements(SuiteRequirements):
    """SQLite's SQL: what stock SQLite (pysqlite) passes with, and cowsql shares."""

    @property
    def views(self) -> exclusions.compound:
        return exclusions.open()

    @property
    def view_reflection(self) -> exclusions.compound:
        return exclusions.open()

    @property
    def view_column_reflection(self) -> exclusions.compound:
        return exclusions.open()

    @property
    def ctes(self) -> exclusions.compound:
        return exclusions.open()

    @property
    def ctes_on_dml(self) -> exclusions.compound:
        return exclusions.closed()  # no DML inside a CTE in SQLite

    @property
    def ctes_with_update_delete(self) -> exclusions.compound:
        return exclusions.open()

    @property
    def intersect(self) -> exclusions.compound:
        return exclusions.open()

    @property
    def except_(self) -> exclusions.compound:
        return exclusions.open()

    @property
    def window_functions(self) -> exclusions.compound:
        return exclusions.open()

    @property
    def savepoints(self) -> exclusions.compound:
        return exclusions.open()

    @property
    def datetime_microseconds(self) -> exclusions.compound:
        return exclusions.open()

    @property
    def timestamp_microseconds(self) -> exclusions.compound:
        return exclusions.open()

    @property
    def datetime_historic(self) -> exclusions.compound:
        return exclusions.open()

    @property
    def date_historic(self) -> exclusions.compound:
        return exclusions.open()

    @property
    def dbapi_lastrowid(self) -> exclusions.compound:
        return exclusions.open()

    @property
    def emulated_lastrowid(self) -> exclusions.compound:
        return exclusions.open()

    @property
    def get_isolation_level_values(self) -> exclusions.compound:
        return exclusions.open()

    @property
    def autocommit(self) -> exclusions.compound:
        return exclusions.open()

    @property
    def isolation_level(self) -> exclusions.compound:
        return exclusions.open()

    @property
    def unique_constraint_reflection(self) -> exclusions.compound:
        return exclusions.open()

    @property
    def reflect_table_options(self) -> exclusions.compound:
        return exclusions.open()

    @property
    def foreign_keys_not_enforced(self) -> exclusions.compound:
        """(ours) PRAGMA foreign_keys is off, as in stock SQLite."""
        return exclusions.open()

    @property
    def json_type(self) -> exclusions.compound:
        return exclusions.open()

    @property
    def mod_operator_as_percent_sign(self) -> exclusions.compound:
        return exclusions.open()

    @property
    def supports_bitwise_and(self) -> exclusions.compound:
        return exclusions.open()

    @property
    def supports_bitwise_or(self) -> exclusions.compound:
        return exclusions.open()

    @property
    def supports_bitwise_not(self) -> exclusions.compound:
        return exclusions.open()

    @property
    def supports_bitwise_shift(self) -> exclusions.compound:
        return exclusions.open()

    @property
    def create_or_replace_view(self) -> exclusions.compound:
        return exclusions.closed()  # SQLite has no CREATE OR REPLACE VIEW

    @property
    def unbounded_varchar(self) -> exclusions.compound:
        return exclusions.open()

    @property
    def unicode_ddl(self) -> exclusions.compound:
        return exclusions.open()

    @property
    def parens_in_union_contained_select_w_limit_offset(self) -> exclusions.compound:
        return exclusions.closed()  # SQLite refuses (SELECT ... LIMIT) UNION (...)

    @property
    def parens_in_union_contained_select_wo_limit_offset(self) -> exclusions.compound:
        return exclusions.closed()

    @property
    def precision_numerics_enotation_small(self) -> exclusions.compound:
        return exclusions.closed()  # SQLite's NUMERIC is a float

    @property
    def precision_numerics_many_significant_digits(self) -> exclusions.compound:
        return exclusions.closed()

    @property
    def precision_numerics_retains_significant_digits(self) -> exclusions.compound:
        return exclusions.closed()

    @property
    def floats_to_four_decimals(self) -> exclusions.compound:
        return exclusions.open()

    # Schemas are ATTACHed databases: cowsql has no ATTACH; stock SQLite is run without
    # them too, so that the two counts compare.
    @property
    def schemas(self) -> exclusions.compound:
        return _closed(NO_ATTACH)

    @property
    def schema_reflection(self) -> exclusions.compound:
        return _closed(NO_ATTACH)

    @property
    def cross_schema_fk_reflection(self) -> exclusions.compound:
        return _closed(NO_ATTACH)

    @property
    def implicit_default_schema(self) -> exclusions.compound:
        return _closed(NO_ATTACH)

    @property
    def default_schema_name_switch(self) -> exclusions.compound:
        return _closed(NO_ATTACH)

    # TEMP tables and views live in one connection; the suite reflects them through
    # others from its pool (cowsql: from other pooled engine sessions).
    @property
    def temporary_tables(self) -> exclusions.compound:
        return _closed(POOLED_SESSIONS)

    @property
    def temp_table_reflection(self) -> exclusions.compound:
        return _closed(POOLED_SESSIONS)

    @property
    def temp_table_names(self) -> exclusions.compound:
        return _closed(POOLED_SESSIONS)

    @property
    def has_temp_table(self) -> exclusions.compound:
        return _closed(POOLED_SESSIONS)

    @property
    def temporary_views(self) -> exclusions.compound:
        return _closed(POOLED_SESSIONS)

    @property
    def temp_table_reflect_indexes(self) -> exclusions.compound:
        return _closed(POOLED_SESSIONS)

    @property
    def create_temp_table_as(self) -> exclusions.compound:
        return _closed(POOLED_SESSIONS)


class Requirements(SQLiteRequirements):
    """cowsql: SQLite's SQL, less what the replicated engine and its driver cannot do."""

    @property
    def regexp_match(self) -> exclusions.compound:
        return _closed(NO_UDF)

    @property
    def regexp_replace(self) -> exclusions.compound:
        return _closed(NO_UDF)

    @property
    def nullable_booleans(self) -> exclusions.compound:
        # The engine sends a NULL in a BOOLEAN column as false (dqlite#882).
        return _closed("NULL in a BOOLEAN column arrives as false (engine quirk, dqlite#882)")

    @property
    def foreign_keys_not_enforced(self) -> exclusions.compound:
        return _closed(
            "the engine enforces foreign keys on every connection (PRAGMA foreign_keys=ON)"
        )
