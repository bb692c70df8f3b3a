"""The Dagster instance on a real PostgreSQL server: docs/dagster.postgres.yaml, as
documented, runs a partitioned materialization whose run, materializations, check
results and pool slots are then read back from Postgres.

The server is a throw-away one from the `pgserver` wheel (PostgreSQL binaries, a unix
socket in the test's temporary folder, no TCP port); the test skips only when that
server cannot start.
"""

import shutil
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from feedback_pipeline.runs import materialize_weeks
from feedback_pipeline.resources import FeedbackHome
from feedback_pipeline.scoring.judge import JudgeResource
from feedback_pipeline_tests.conftest import WEEK, good_record, write_jsonl

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "docs" / "dagster.postgres.yaml"


@pytest.fixture(scope="module")
def postgres_url(tmp_path_factory):
    pgserver = pytest.importorskip("pgserver", reason="pgserver is not installed (make install)")
    pytest.importorskip("dagster_postgres", reason="dagster-postgres is not installed (make install)")
    pgdata = tmp_path_factory.mktemp("pg") / "data"
    try:
        server = pgserver.get_server(pgdata, cleanup_mode="delete")
    except Exception as exc:  # no binaries for this platform, no user to run as, ...
        pytest.skip(f"pgserver could not start a PostgreSQL server: {exc!r}")
    try:
        # The driver is named, as docs/dagster.postgres.yaml says (SQLAlchemy 2.1 maps a
        # bare postgresql:// to psycopg 3).
        yield server.get_uri().replace("postgresql://", "postgresql+psycopg2://", 1)
    finally:
        server.cleanup()


@pytest.fixture
def instance(postgres_url, tmp_path, monkeypatch):
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    shutil.copy(CONFIG, dagster_home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", postgres_url)
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    with dg.DagsterInstance.get() as instance:
        yield instance


def test_partitioned_run_is_stored_in_postgres(instance, postgres_url, tmp_path):
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

    assert isinstance(instance.run_storage, PostgresRunStorage)
    assert isinstance(instance.event_log_storage, PostgresEventLogStorage)

    home = FeedbackHome(path=str(tmp_path / "home"))
    write_jsonl(home.landing / "a.jsonl", [good_record(f"t{i}") for i in range(5)]
                + [good_record("bad", latency_ms=-1)])
    [result] = materialize_weeks([WEEK], resources={"home": home, "judge": JudgeResource()},
                                 selection=dg.AssetSelection.assets("raw_traces", "ingest_quarantine"), instance=instance)
    assert result.success

    # Read back through a fresh instance: nothing comes from the first one's memory.
    with dg.DagsterInstance.get() as reader:
        run = reader.get_run_by_id(result.run_id)
        assert run.status == dg.DagsterRunStatus.SUCCESS and run.tags["dagster/partition"] == WEEK
        [traces] = reader.fetch_materializations(dg.AssetKey("raw_traces"), limit=10).records
        [quarantine] = reader.fetch_materializations(dg.AssetKey("ingest_quarantine"), limit=10).records
        assert traces.run_id == result.run_id and traces.partition_key == WEEK
        assert traces.asset_materialization.metadata["dagster/row_count"].value == 5
        assert quarantine.asset_materialization.metadata["dagster/row_count"].value == 1
        assert reader.event_log_storage.get_concurrency_info("warehouse").slot_count == 1
        assert reader.event_log_storage.get_concurrency_info("warehouse").claimed_slots == []

    # ... and it is really in Postgres, not in a SQLite file under DAGSTER_HOME.
    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as con:
            assert con.execute(sa.text("SELECT status FROM runs WHERE run_id = :r"),
                               {"r": result.run_id}).scalar_one() == "SUCCESS"
            events = dict(con.execute(sa.text(
                "SELECT dagster_event_type, count(*) FROM event_logs WHERE run_id = :r "
                "GROUP BY dagster_event_type"), {"r": result.run_id}).all())
    finally:
        engine.dispose()
    assert events["ASSET_MATERIALIZATION"] == 2
    assert events["ASSET_CHECK_EVALUATION"] == 2  # both blocking schema checks ran
    assert not list(Path(instance.root_directory).rglob("*.db"))
