"""The database the migrations build is the schema ``outcrop/store/schema.py`` declares.

The DDL lives in ``migrations.py`` and the queries use the Table objects of ``schema.py``; this
reads the migrated database back (SQLAlchemy's inspector) on SQLite and PostgreSQL and compares
tables, columns, types (loosely: their family and string length), nullability, primary keys,
unique constraints and indexes, so a migration without its declaration (or the reverse) fails here.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from outcrop.store.db import Database
from outcrop.store.schema import metadata


def type_family(column_type: Any) -> str:
    """``BIGINT`` and ``sa.BigInteger`` -> "bigint"; ``VARCHAR(12)`` -> "varchar(12)"; and so on."""
    if isinstance(column_type, sa.Boolean):
        return "boolean"
    if isinstance(column_type, sa.BigInteger):
        return "bigint"
    if isinstance(column_type, sa.Integer):
        return "integer"
    if isinstance(column_type, sa.Float | sa.Numeric):
        return "float"
    if isinstance(column_type, sa.String):
        return (
            "text"
            if isinstance(column_type, sa.Text) or column_type.length is None
            else f"varchar({column_type.length})"
        )
    return type(column_type).__name__.lower()


def declared(table: sa.Table) -> dict[str, Any]:
    primary_key = tuple(c.name for c in table.primary_key.columns)
    unique = {(c.name,) for c in table.columns if c.unique}
    unique |= {
        tuple(c.name for c in uc.columns) for uc in table.constraints if isinstance(uc, sa.UniqueConstraint)
    }
    unique |= {tuple(c.name for c in ix.columns) for ix in table.indexes if ix.unique}
    return {
        "columns": {
            c.name: (type_family(c.type), c.nullable or c.name in primary_key) for c in table.columns
        },
        "primary_key": primary_key,
        "unique": unique,
        "indexes": {(ix.name, tuple(c.name for c in ix.columns)) for ix in table.indexes if not ix.unique},
    }


def migrated(inspector: Any, name: str) -> dict[str, Any]:
    primary_key = tuple(inspector.get_pk_constraint(name)["constrained_columns"])
    # SQLite backs a column's UNIQUE (and a text primary key) with an automatic index only.
    sqlite = inspector.dialect.name == "sqlite"
    indexes = inspector.get_indexes(name, **({"include_auto_indexes": True} if sqlite else {}))
    unique = {tuple(uc["column_names"]) for uc in inspector.get_unique_constraints(name)}
    unique |= {tuple(ix["column_names"]) for ix in indexes if ix["unique"]}
    unique.discard(primary_key)
    return {
        # SQLite lets a non-integer primary key hold NULL; whether it does is not the schema's to say.
        "columns": {
            c["name"]: (type_family(c["type"]), c["nullable"] or c["name"] in primary_key)
            for c in inspector.get_columns(name)
        },
        "primary_key": primary_key,
        "unique": unique,
        "indexes": {(ix["name"], tuple(ix["column_names"])) for ix in indexes if not ix["unique"]},
    }


def test_migrated_database_matches_the_declared_schema(database_url: str) -> None:
    db = Database(database_url)
    try:
        db.migrate()
        inspector = sa.inspect(db.engine)

        assert sorted(inspector.get_table_names()) == sorted(metadata.tables)
        for name, table in metadata.tables.items():
            assert migrated(inspector, name) == declared(table), f"table {name}"
    finally:
        db.dispose()
