"""The cache example's table, made once by the master's ``on_starting`` hook, before any worker."""

from __future__ import annotations

import os

import psycopg

import forkserve

ITEMS = 100


def create(info: forkserve.ServerInfo) -> None:
    url = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1/postgres")
    with psycopg.connect(url) as db:
        db.execute("CREATE TABLE IF NOT EXISTS example_items (id integer PRIMARY KEY, name text NOT NULL)")
        db.execute(
            "INSERT INTO example_items SELECT n, 'item ' || n FROM generate_series(1, %s) AS n "
            "ON CONFLICT (id) DO NOTHING",
            (ITEMS,),
        )
