"""SQLAlchemy's dialect compliance suite, as third-party dialects run it.

A few tests are closed here rather than through requirements: they fail the same
way on stock SQLite 3.40 with pysqlite (SQLAlchemy 2.1's SQLite reflection of the
suite's "dingalings" table: several named foreign keys and unique constraints),
so they say nothing about cowsql.
"""

from sqlalchemy.testing import exclusions
from sqlalchemy.testing.suite import *  # noqa: F403
from sqlalchemy.testing.suite import ComponentReflectionTest as _ComponentReflectionTest

STOCK_SQLITE_FAILS = exclusions.closed(
    "fails on stock SQLite 3.40 + pysqlite too (SQLAlchemy's SQLite reflection)"
)


class ComponentReflectionTest(_ComponentReflectionTest):  # type: ignore[no-redef]  # replaces the suite's
    @STOCK_SQLITE_FAILS
    def test_get_multi_unique_constraints(self) -> None: ...

    @STOCK_SQLITE_FAILS
    def test_get_multi_foreign_keys(self) -> None: ...

    @STOCK_SQLITE_FAILS
    def test_get_foreign_keys(self) -> None: ...

    @STOCK_SQLITE_FAILS
    def test_get_pk_constraint(self) -> None: ...

    @STOCK_SQLITE_FAILS
    def test_metadata(self) -> None: ...


# -- cowsql: what differs from stock SQLite, each with its reason ---------------------------------

from sqlalchemy.testing.suite import BooleanTest as _BooleanTest  # noqa: E402
from sqlalchemy.testing.suite import IsolationLevelTest as _IsolationLevelTest  # noqa: E402
from sqlalchemy.testing.suite import UnicodeSchemaTest as _UnicodeSchemaTest  # noqa: E402


class UnicodeSchemaTest(_UnicodeSchemaTest):  # type: ignore[no-redef]  # replaces the suite's
    # Its tables reference a column that is not unique: refused where foreign keys are enforced.
    __requires__ = ("foreign_keys_not_enforced",)


class IsolationLevelTest(_IsolationLevelTest):  # type: ignore[no-redef]  # replaces the suite's
    @exclusions.closed(
        "needs a second isolation level besides AUTOCOMMIT: the engine has SERIALIZABLE only"
    )
    def test_dialect_user_setting_is_restored(self) -> None: ...


class BooleanTest(_BooleanTest):  # type: ignore[no-redef]  # replaces the suite's
    @exclusions.closed("a NULL in a BOOLEAN column arrives as false (engine quirk, dqlite#882)")
    def test_render_literal_bool(self) -> None: ...
