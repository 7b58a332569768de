"""Alembic against a real 3-node cluster: online and offline migrations, and an
autogenerate on an up-to-date schema that proposes nothing (the driver's own
tables stay invisible to it)."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

import cowsqlpy
from cowsqlpy.database import MARKERS
from cowsqlpy.sqlalchemy import create_engine
from cowsqlpy.testing import Cluster

MODELS = """
import sqlalchemy as sa

metadata = sa.MetaData()
users = sa.Table(
    "users", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(50), nullable=False),
    sa.Column("created", sa.DateTime, nullable=True),
    sa.Column("email", sa.String(120), nullable=True),
    sa.Index("ix_users_name", "name", unique=True),
)
posts = sa.Table(
    "posts", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
    sa.Column("title", sa.String(200), nullable=False),
    sa.Column("published", sa.Boolean, nullable=False),
    sa.Column("day", sa.Date, nullable=True),
)
"""

ENV = """
import sys
from alembic import context
from sqlalchemy import engine_from_config, pool

sys.path.insert(0, context.config.get_main_option("models_dir"))
import models  # noqa: E402

config = context.config

if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=models.metadata,
                      literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()
else:
    engine = engine_from_config(config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.",
                                poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=models.metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
"""

SCRIPT_MAKO = '''"""${message}"""
from alembic import op
import sqlalchemy as sa
${imports if imports else ""}
revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = None
depends_on = None


def upgrade():
    ${upgrades if upgrades else "pass"}


def downgrade():
    ${downgrades if downgrades else "pass"}
'''

FIRST = """
from alembic import op
import sqlalchemy as sa

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(50), nullable=False),
        sa.Column("created", sa.DateTime, nullable=True),
    )
    op.create_index("ix_users_name", "users", ["name"], unique=True)
    op.execute("INSERT INTO users (name) VALUES ('first')")


def downgrade():
    op.drop_index("ix_users_name", "users")
    op.drop_table("users")
"""

SECOND = """
from alembic import op
import sqlalchemy as sa

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("users", sa.Column("email", sa.String(120), nullable=True))
    op.create_table(
        "posts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("published", sa.Boolean, nullable=False),
        sa.Column("day", sa.Date, nullable=True),
    )


def downgrade():
    op.drop_table("posts")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("email")
"""


def alembic_config(
    tmp_path: Path, url: str, migrations: tuple[str, ...] = (FIRST, SECOND)
) -> Config:
    """An Alembic project in `tmp_path`: models, env.py, `migrations`."""
    root = tmp_path / "migrations"
    (root / "versions").mkdir(parents=True)
    (tmp_path / "models.py").write_text(textwrap.dedent(MODELS))
    (root / "env.py").write_text(textwrap.dedent(ENV))
    (root / "script.py.mako").write_text(SCRIPT_MAKO)
    for i, migration in enumerate(migrations, 1):
        (root / "versions" / f"{i:04d}.py").write_text(textwrap.dedent(migration))
    cfg = Config(stdout=io.StringIO(), output_buffer=io.StringIO())
    cfg.set_main_option("script_location", str(root))
    cfg.set_main_option("sqlalchemy.url", url)  # the bracket form: alembic.ini holds it as it is
    cfg.set_main_option("models_dir", str(tmp_path))
    return cfg


def url_of(cluster: Cluster, dbname: str) -> str:
    return f"cowsql://[{','.join(cluster.addresses)}]/{dbname}"


def test_online_upgrade_downgrade_and_an_empty_autogenerate(
    cluster: Cluster, dbname: str, tmp_path: Path
) -> None:
    url = url_of(cluster, dbname)
    cfg = alembic_config(tmp_path, url)
    command.upgrade(cfg, "head")
    engine = create_engine(url)
    try:
        inspector = sa.inspect(engine)
        assert sorted(inspector.get_table_names()) == ["alembic_version", "posts", "users"]
        assert MARKERS in inspector.get_table_names(
            sqlite_include_internal=True
        )  # there, yet unseen
        with engine.connect() as conn:
            assert (
                conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one()
                == "0002"
            )
            assert conn.execute(sa.text("SELECT name, email FROM users")).all() == [("first", None)]

        command.revision(cfg, message="nothing to do", autogenerate=True, rev_id="0003")
        script = ScriptDirectory.from_config(cfg).get_revision("0003")
        assert script is not None
        source = Path(script.path).read_text()
        assert "op." not in source, (
            source
        )  # no create/drop/alter proposed: the schema is up to date
        Path(script.path).unlink()

        command.downgrade(cfg, "0001")
        assert sorted(sa.inspect(engine).get_table_names()) == ["alembic_version", "users"]
        assert [c["name"] for c in sa.inspect(engine).get_columns("users")] == [
            "id",
            "name",
            "created",
        ]
        command.downgrade(cfg, "base")
        assert sa.inspect(engine).get_table_names() == ["alembic_version"]
    finally:
        engine.dispose()


def test_offline_sql_script_migrates_a_cluster_database(
    cluster: Cluster, dbname: str, tmp_path: Path
) -> None:
    url = url_of(cluster, dbname)
    cfg = alembic_config(tmp_path, url)
    command.upgrade(cfg, "head", sql=True)  # offline: the SQL, for a DBA to run
    assert isinstance(cfg.output_buffer, io.StringIO)
    sql = cfg.output_buffer.getvalue()
    assert "CREATE TABLE users" in sql and "CREATE TABLE posts" in sql and "0002" in sql
    conn = cowsqlpy.connect(cluster.addresses, database=dbname)
    try:
        conn.executescript(sql)
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [("0002",)]
        assert conn.execute("SELECT name FROM users").fetchall() == [("first",)]
    finally:
        conn.close()
    # The cluster's schema is what the online path would have made: nothing to generate.
    command.revision(cfg, message="after offline", autogenerate=True, rev_id="0003")
    script = ScriptDirectory.from_config(cfg).get_revision("0003")
    assert script is not None and "op." not in Path(script.path).read_text()


def test_autogenerate_sees_a_real_difference(cluster: Cluster, dbname: str, tmp_path: Path) -> None:
    """The empty proposal above is not a blind spot: a missing column is proposed."""
    url = url_of(cluster, dbname)
    cfg = alembic_config(tmp_path, url, migrations=(FIRST,))
    command.upgrade(cfg, "head")
    command.revision(cfg, message="catch up", autogenerate=True, rev_id="0003")
    script = ScriptDirectory.from_config(cfg).get_revision("0003")
    assert script is not None
    source = Path(script.path).read_text()
    assert "op.create_table('posts'" in source and "batch_op.add_column(sa.Column('email'" in source
    assert MARKERS not in source

