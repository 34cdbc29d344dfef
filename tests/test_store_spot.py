"""The spot tables of the effopt store, and the spot section of the effopt page built on them."""

from __future__ import annotations

import json

import pytest

from effopt.store import EffoptStore

OWNER = {"dag_id": "train", "task_id": "fleet", "run_id": "r1", "map_index": -1, "try_number": 1}


def _instance(instance_id: str, launched_at: float, price: float | None, capacity: str = "spot", **kw) -> dict:
    return {**OWNER, "instance_id": instance_id, "fleet_id": "fleet-1", "client_token": "effopt-t",
            "instance_type": "m5.large", "region": "us-east-1", "az_id": "use1-az1", "zone": "us-east-1b",
            "capacity": capacity, "usd_per_hour": price, "launched_at": launched_at, **kw}


@pytest.fixture
def spot_store(tmp_path):
    s = EffoptStore(f"sqlite:///{tmp_path}/spot.db")
    yield s
    s.dispose()


def test_instances_are_recorded_once_and_ended_once(spot_store):
    assert spot_store.record_spot_instances([_instance("i-1", 1000.0, 0.04), _instance("i-2", 1000.0, 0.1,
                                                                                         "on-demand")]) == 2
    assert spot_store.record_spot_instances([_instance("i-1", 5000.0, 9.9)]) == 0  # a re-run records nothing new
    assert spot_store.end_spot_instances(["i-1"], 4600.0, "released") == 1
    assert spot_store.end_spot_instances(["i-1", "i-2"], 9000.0, "cleanup") == 1  # i-1 keeps its first end
    rows = {r["instance_id"]: r for r in spot_store.spot_instances()}
    assert (rows["i-1"]["launched_at"], rows["i-1"]["ended_at"], rows["i-1"]["end_reason"]) == (1000.0, 4600.0,
                                                                                                  "released")
    assert rows["i-2"]["end_reason"] == "cleanup" and spot_store.spot_instances(open_only=True) == []


def test_unavailable_offerings_expire_and_a_new_mark_replaces_the_old(spot_store):
    spot_store.mark_offering_unavailable("m5.large|us-east-1|use1-az1|spot", 1180.0, "InsufficientInstanceCapacity",
                                         1000.0)
    assert spot_store.unavailable_offerings(1100.0) == {"m5.large|us-east-1|use1-az1|spot":
                                                        "InsufficientInstanceCapacity"}
    assert spot_store.unavailable_offerings(1180.0) == {}
    spot_store.mark_offering_unavailable("m5.large|us-east-1|use1-az1|spot", 1500.0, "interruption notice", 1200.0)
    assert spot_store.unavailable_offerings(1300.0) == {"m5.large|us-east-1|use1-az1|spot": "interruption notice"}


def test_the_spot_summary_prices_fleets_so_far_and_shows_only_readable_dags(spot_store, monkeypatch):
    from effopt.www import data, page

    monkeypatch.setattr("effopt.airflow_settings.get_store", lambda: spot_store)
    monkeypatch.setattr(data, "readable", lambda user, dags: {d for d in dags if d == "train"})
    now = 100_000.0
    spot_store.record_spot_instances([_instance("i-1", now - 7200, 0.04), _instance("i-2", now - 3600, 0.1,
                                                                                      "on-demand"),
                                      _instance("i-3", now - 3600, None),
                                      {**_instance("i-9", now - 3600, 5.0), "dag_id": "secret_dag"}])
    spot_store.end_spot_instances(["i-2"], now - 1800, "released")
    spot_store.save_spot_decision(now - 7300, OWNER, "spot", "m5.large spot us-east-1/use1-az1", 0.05,
                                  {"reasons": ["spot is cheaper <b>here</b>"], "catalog_source": "snapshot s1"})
    spot_store.record_spot_event(now - 600, "interruption", OWNER, {
        "notice": {"instance_id": "i-1", "action": "terminate", "time": "T"},
        "offering": {"instance_type": "m5.large", "zone": "us-east-1b"}, "exclude": [["m5.large", "use1-az1"]]})
    spot_store.record_spot_event(now - 500, "disruption", {**OWNER, "task_id": "pod"},
                                 {"pod": "train-abc", "capacity": "spot", "reason": "DisruptionTarget (x)",
                                  "relaunch": 1})
    spot_store.record_spot_event(now - 400, "cleanup", {**OWNER, "task_id": "cleanup"},
                                 {"terminated": ["i-7", "i-8"], "summary": "2 terminated"})
    spot_store.record_spot_event(now - 300, "fallback", {**OWNER, "dag_id": "secret_dag"}, {"reason": "x"})
    spot = data.spot_summary(user=None, now=now)
    (fleet,) = spot["fleets"]
    # i-1: 2 h at 0.04; i-2: 0.5 h at 0.1 (ended); i-3 unpriced; i-9 is another DAG's.
    assert fleet["cost_so_far"] == pytest.approx(2 * 0.04 + 0.5 * 0.1)
    assert (fleet["instances"], fleet["running"], fleet["unpriced"]) == (3, 2, 1)
    assert fleet["capacity"] == {"spot": 2, "on-demand": 1} and fleet["usd_per_hour"] == pytest.approx(0.04)
    assert spot["counts"]["interruption"] == 1 and spot["counts"]["disruption"] == 1
    assert spot["counts"]["fallback"] == 0 and spot["counts"]["orphans_terminated"] == 2
    assert "relaunch excludes m5.large/use1-az1" in spot["events"][-1]["text"]
    assert json.loads(json.dumps(spot)) == spot
    html = page.spot_section(spot, now)
    assert "cost so far 0.13 USD" in html and "1 pod disruption" in html and "2 orphaned instance(s)" in html
    assert "<b>here</b>" not in html and "&lt;b&gt;here&lt;/b&gt;" in html  # escaped
    assert "secret_dag" not in html
    assert "No spot placement yet" in page.spot_section(None, now)
