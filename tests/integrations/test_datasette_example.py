"""The Datasette example under the reference policy, from IAMSCOPE_CONFIG, served by
uvicorn: what each reference persona sees, counted against the source database."""

from __future__ import annotations

import csv
import io
import json
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
import yaml

from iamscope.config import parse_text, read_text
from iamscope.testing import LocalIssuer

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "examples" / "policy" / "iamscope.yaml"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, LocalIssuer, Path]]:
    from examples.datasette import app as example

    tmp = tmp_path_factory.mktemp("example")
    policy = parse_text(read_text(REFERENCE))["policy"]
    with LocalIssuer() as issuer, pytest.MonkeyPatch.context() as env:
        config = {
            "issuers": [
                {"name": "corp", "issuer": issuer.url, "audience": issuer.audience},
                {"name": "ci", "issuer": "https://ci.invalid", "audience": "x",
                 "jwks_uri": "https://ci.invalid/k"},
            ],
            "policy": json.loads(json.dumps(policy)),
        }  # fmt: skip
        (tmp / "iamscope.yaml").write_text(yaml.safe_dump(config))
        database = example.build_database(tmp / "analytics.db")
        env.setenv("IAMSCOPE_CONFIG", str(tmp / "iamscope.yaml"))
        env.setenv("IAMSCOPE_HASH_KEY", "example-key")
        env.setenv(example.DATABASE_ENV, str(database))
        app = example.create_app()  # what `uvicorn examples.datasette.app:app` builds
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="error"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started and thread.is_alive():
            time.sleep(0.01)
        try:
            yield f"http://127.0.0.1:{port}", issuer, database
        finally:
            server.should_exit = True
            thread.join(timeout=10)


def truth(database: Path, where: str) -> list[int]:
    with sqlite3.connect(database) as db:
        return [i for (i,) in db.execute(f"SELECT id FROM sales WHERE {where} ORDER BY id")]  # noqa: S608


PERSONAS = {"sales-east": "region = 'east'", "sales-west": "region = 'west'", "admins": "1"}


@pytest.mark.parametrize("group", [*PERSONAS, "marketing"])
def test_each_reference_persona_sees_its_plan_everywhere(
    served: tuple[str, LocalIssuer, Path], group: str
) -> None:
    base, issuer, database = served
    expected = truth(database, PERSONAS.get(group, "0"))
    token = issuer.mint(groups=[group])
    with httpx.Client(base_url=base, headers={"authorization": f"Bearer {token}"}) as http:

        def ids(path: str) -> list[int]:
            answer = http.get(path)
            assert answer.status_code < 500
            return sorted(r["id"] for r in answer.json()) if answer.status_code == 200 else []

        assert ids("/analytics/sales.json?_shape=array&_size=max") == expected
        exported = http.get("/analytics/sales.csv?_stream=on")
        rows = csv.DictReader(io.StringIO(exported.text)) if exported.status_code == 200 else []
        assert sorted(int(r["id"]) for r in rows) == expected
        page = http.get("/analytics.json").json()
        assert {t["name"]: t["count"] for t in page["tables"]} == (
            {"sales": len(expected)} if expected else {}
        )
        by_region = http.get("/analytics/sales_by_region.json?_shape=array")
        counted = sum(r["sales"] for r in by_region.json()) if by_region.status_code == 200 else 0
        assert counted == len(expected)
        visible = [
            i
            for i in (1, 2, 3, 4, 5, 6, 7, 8)
            if http.get(f"/analytics/sales/{i}.json").status_code == 200
        ]
        assert visible == [i for i in expected if i <= 8]
        assert http.get("/analytics/traces.json").status_code == 404  # named by no policy
        sql = http.get("/analytics.json?sql=select+count(*)+from+sales")
        assert sql.status_code == (200 if group == "admins" else 403)


def test_the_example_app_is_built_only_when_asked_for() -> None:
    from examples.datasette import app as example

    assert "app" not in vars(example)  # importing built nothing (no config needed)
    with pytest.raises(AttributeError):
        example.no_such_name  # noqa: B018
