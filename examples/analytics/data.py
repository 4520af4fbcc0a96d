"""The analytics example's data: sales rows across regions and accounts, and trace
summaries across projects and environments, generated deterministically into SQLite."""

from __future__ import annotations

import random
import sqlite3

REGIONS = ("east", "west", "north", "south")
ACCOUNTS = ("acme-retail", "acme-b2b", "globex", "initech")
PROJECTS = ("checkout", "payments", "search")
ENVIRONMENTS = ("production", "staging")
SERVICES = {"checkout": "checkout-api", "payments": "payments-api", "search": "search-api"}


def create_database(
    path: str = ":memory:", *, sales: int = 400, seed: int = 7
) -> sqlite3.Connection:
    """A fresh database; the same seed gives the same rows (the demo checks counts)."""
    rng = random.Random(seed)  # noqa: S311 - sample data, not secrets
    db = sqlite3.connect(path, check_same_thread=False)
    db.executescript(
        """
        CREATE TABLE sales (
            id INTEGER PRIMARY KEY, region TEXT NOT NULL, account TEXT NOT NULL,
            amount REAL NOT NULL, day TEXT NOT NULL);
        CREATE TABLE traces (
            trace_id TEXT PRIMARY KEY, project TEXT NOT NULL, environment TEXT NOT NULL,
            service TEXT NOT NULL, root TEXT NOT NULL, duration_ms REAL NOT NULL);
        """
    )
    db.executemany(
        "INSERT INTO sales (region, account, amount, day) VALUES (?, ?, ?, ?)",
        [
            (
                REGIONS[i % len(REGIONS)],  # every region gets the same share
                rng.choice(ACCOUNTS),
                round(rng.uniform(10, 5000), 2),
                f"2026-11-{1 + i % 22:02d}",
            )
            for i in range(sales)
        ],
    )
    db.executemany(
        "INSERT INTO traces VALUES (?, ?, ?, ?, ?, ?)",
        [
            (
                f"{rng.getrandbits(128):032x}",
                project,
                env,
                SERVICES[project],
                rng.choice(("GET /cart", "POST /pay", "GET /search", "POST /order")),
                round(rng.uniform(5, 900), 1),
            )
            for project in PROJECTS
            for env in ENVIRONMENTS
            for _ in range(5)
        ],
    )
    db.commit()
    return db
