"""The Dagster instance on a real PostgreSQL (dagster-postgres): runs, events, checks stored."""

from __future__ import annotations

import dagster as dg
import pytest
from sqlalchemy import create_engine, text

from assets import data
from resources.io_manager import DatasetIOManager

pytestmark = pytest.mark.postgres


def test_materialization_is_stored_in_postgres(pg_database, tmp_path):
    url = pg_database.render_as_string(hide_password=False)
    home = tmp_path / "dagster_home"
    home.mkdir()
    overrides = {"storage": {"postgres": {"postgres_url": url}}}
    with dg.instance_for_test(overrides=overrides, temp_dir=str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        resources = {"io_manager": DatasetIOManager(root=str(tmp_path / "artifacts"))}
        assets = dg.load_assets_from_modules([data])
        dg.materialize(
            assets, selection=["gxp_site_master"], instance=instance, resources=resources
        )
        result = dg.materialize(
            assets,
            selection=["gxp_records", "gxp_labels"],
            partition_key="control_faulty",
            instance=instance,
            resources=resources,
            run_config={"ops": {"gxp_batch_records": {"config": {"n_batches": 3}}}},
        )
        assert result.success
        event = instance.get_latest_materialization_event(dg.AssetKey("gxp_records"))
        assert event.dagster_event.partition == "control_faulty"
        check = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(dg.AssetKey("gxp_records"), "reference_auditor_recall")]
        )
        assert len(check) == 1
    engine = create_engine(pg_database)
    with engine.connect() as conn:
        runs = conn.execute(text("select count(*) from runs")).scalar_one()
        materializations = conn.execute(
            text(
                "select count(*) from event_logs where dagster_event_type = 'ASSET_MATERIALIZATION'"
            )
        ).scalar_one()
    engine.dispose()
    assert runs >= 2
    assert materializations >= 3  # site master, records, labels


def test_init_instance_selects_postgres_from_the_environment(pg_database, tmp_path, monkeypatch):
    """`gxplab init-instance` with GXPLAB_DAGSTER_PG_URL set gives an instance on that server; the
    URL (and so any password) stays in the environment, not in dagster.yaml."""
    from jobs.cli import main

    url = pg_database.render_as_string(hide_password=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.setenv("GXPLAB_DAGSTER_PG_URL", url)
    assert main(["init-instance"]) == 0
    written = (tmp_path / "dagster.yaml").read_text()
    assert "env: GXPLAB_DAGSTER_PG_URL" in written and url not in written
    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
