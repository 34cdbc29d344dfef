"""The GPU pool plan: pools from the inventory and the quotas, idempotence, shrinks and deletions with tasks in
them, an empty inventory; and ``[effopt] gpu_quotas``."""

from __future__ import annotations

import pytest

from effopt.config import ConfigError, GpuQuota, Settings, parse_gpu_quotas
from effopt.gpu.inventory import GpuDevice, Inventory, InventoryNode
from effopt.gpu.pools import MARK, Quota, managed, model_pool, plan_pools, pool_for, quota_pool, wanted_pools


def inventory() -> Inventory:
    return Inventory.of([
        InventoryNode("a", tuple(GpuDevice(i, "A100") for i in range(4))),
        InventoryNode("t", tuple(GpuDevice(i, "Tesla-T4") for i in range(2))),
    ], "static", "gpus.yaml")


def _as_existing(plan) -> dict[str, dict]:
    """Airflow's pools after applying ``plan`` (nothing running)."""
    return {c.pool: {"slots": c.slots_after, "description": c.description, "occupied_slots": 0}
            for c in plan if c.action != "delete" and c.slots_after is not None}


def test_pools_from_the_inventory_and_the_quotas_in_gpus():
    quotas = [Quota("team-a", "A100", 3000), Quota("team-b", "*", 8000), Quota("team-c", "H100", 2000)]
    plan = {c.pool: c for c in plan_pools(inventory(), "gpu", quotas, {})}
    slots = {name: c.slots_after for name, c in plan.items()}
    assert slots == {"effopt_serial": 1, "effopt_gpu": 6, "effopt_gpu_A100": 4, "effopt_gpu_Tesla-T4": 2,
                     "effopt_quota_team-a_A100": 3, "effopt_quota_team-b": 6, "effopt_quota_team-c_H100": 0}
    assert {c.action for c in plan.values()} == {"create"}
    assert plan["effopt_quota_team-b"].reason == "quota team-b:*=8 GPUs, capped at the 6 GPUs of any model that exist"
    assert plan["effopt_quota_team-c_H100"].reason == "quota team-c:H100=2 GPUs, but no GPU of H100 exists"
    assert plan["effopt_gpu"].description.endswith(MARK)
    assert managed("effopt_gpu_A100", plan["effopt_gpu_A100"].description)


def test_slots_in_thousandths_and_a_fractional_quota():
    plan = {c.pool: c.slots_after for c in plan_pools(inventory(), "milli", [Quota("t", "Tesla-T4", 500)], {})}
    assert plan["effopt_gpu"] == 6000 and plan["effopt_gpu_Tesla-T4"] == 2000 and plan["effopt_quota_t_Tesla-T4"] == 500
    # In whole-GPU slots half a GPU of quota is one slot: a quota pool never has 0 slots while the GPUs exist.
    assert {c.pool: c.slots_after for c in plan_pools(inventory(), "gpu", [Quota("t", "Tesla-T4", 500)], {})}[
        "effopt_quota_t_Tesla-T4"] == 1


def test_a_second_run_changes_nothing():
    first = plan_pools(inventory(), "gpu", [Quota("team-a", "A100", 3000)], {})
    second = plan_pools(inventory(), "gpu", [Quota("team-a", "A100", 3000)], _as_existing(first))
    assert [c.action for c in second] == ["keep"] * len(second) and not any(c.changes for c in second)


def test_a_shrink_below_the_occupied_slots_is_done_and_reported():
    existing = _as_existing(plan_pools(inventory(), "gpu", [], {}))
    existing["effopt_gpu_A100"].update(occupied_slots=3, running_slots=3)
    smaller = Inventory.of([InventoryNode("a", tuple(GpuDevice(i, "A100") for i in range(2))),
                            InventoryNode("t", tuple(GpuDevice(i, "Tesla-T4") for i in range(2)))], "static", "x")
    plan = {c.pool: c for c in plan_pools(smaller, "gpu", [], existing)}
    change = plan["effopt_gpu_A100"]
    assert (change.action, change.slots_before, change.slots_after, change.occupied) == ("shrink-occupied", 4, 2, 3)
    assert "3 slot(s) are in use, more than the 2 that remain: running tasks go on, new ones wait" in change.reason
    assert plan["effopt_gpu"].action == "update" and plan["effopt_gpu"].slots_after == 4  # 3 used of 4: a plain update


def test_a_pool_that_is_no_longer_wanted_is_deleted_unless_tasks_use_it():
    existing = _as_existing(plan_pools(inventory(), "gpu", [Quota("old", "*", 1000)], {}))
    existing["effopt_gpu_Tesla-T4"].update(running_slots=1, occupied_slots=1)
    existing["my_pool"] = {"slots": 3, "description": "mine", "occupied_slots": 0}
    only_a100 = Inventory.of([InventoryNode("a", tuple(GpuDevice(i, "A100") for i in range(4)))], "static", "x")
    plan = {c.pool: c for c in plan_pools(only_a100, "gpu", [], existing)}
    assert plan["effopt_quota_old"].action == "delete"
    t4 = plan["effopt_gpu_Tesla-T4"]
    assert (t4.action, t4.slots_after) == ("empty-occupied", 0) and "1 task slot(s) still use it" in t4.reason
    assert "my_pool" not in plan  # not effopt's: never touched
    # Once emptied and still busy it is kept; once idle it is deleted.
    existing["effopt_gpu_Tesla-T4"]["slots"] = 0
    assert {c.pool: c.action for c in plan_pools(only_a100, "gpu", [], existing)}["effopt_gpu_Tesla-T4"] == "keep"
    existing["effopt_gpu_Tesla-T4"].update(running_slots=0, occupied_slots=0)
    assert {c.pool: c.action for c in plan_pools(only_a100, "gpu", [], existing)}["effopt_gpu_Tesla-T4"] == "delete"


def test_an_empty_inventory_leaves_every_gpu_pool_as_it_is():
    empty = Inventory((), "static", "[effopt] gpu_inventory_file is not set")
    existing = {"effopt_gpu": {"slots": 1, "description": "GPU slots for effopt graph nodes", "occupied_slots": 0},
                "effopt_serial": {"slots": 1, "description": "", "occupied_slots": 0}}
    plan = plan_pools(empty, "gpu", [Quota("a", "*", 1000)], existing)
    assert [(c.pool, c.action, c.slots_after) for c in plan] == [("effopt_serial", "keep", 1),
                                                                 ("effopt_gpu", "left-as-is", 1)]
    assert "no GPUs in the inventory" in plan[1].reason and not any(c.changes for c in plan)
    # No effopt_gpu at all: Airflow would never schedule a GPU task, so it is made with one GPU's worth of slots.
    fresh = plan_pools(empty, "gpu", [], {})
    assert [(c.pool, c.action, c.slots_after) for c in fresh] == [("effopt_serial", "create", 1),
                                                                  ("effopt_gpu", "create", 1)]
    assert "never being scheduled" in fresh[1].reason and fresh[1].description.endswith(MARK)
    assert plan_pools(empty, "milli", [], {})[1].slots_after == 1000


def test_pool_names_and_a_task_s_pool():
    assert model_pool("A100 SXM4/40GB") == "effopt_gpu_A100_SXM4_40GB" and model_pool("mig-3g.20gb") == \
        "effopt_gpu_mig-3g.20gb"
    assert quota_pool("team-a") == "effopt_quota_team-a" and quota_pool("team-a", "A100") == "effopt_quota_team-a_A100"
    quotas = [Quota("team-a", "A100", 4000), Quota("team-a", "*", 8000)]
    assert pool_for(gpu_pool="effopt_gpu", tenant=None, quotas=quotas) == "effopt_gpu"
    assert pool_for(gpu_pool="effopt_gpu", tenant="team-a", models=["A100"],
                    quotas=quotas) == "effopt_quota_team-a_A100"
    assert pool_for(gpu_pool="effopt_gpu", tenant="team-a", models=["T4"], quotas=quotas) == "effopt_quota_team-a"
    with pytest.raises(ValueError, match="tenant 'team-z' has no GPU quota for any model"):
        pool_for(gpu_pool="effopt_gpu", tenant="team-z", quotas=quotas)


def test_wanted_pools_count_mig_slices_as_gpus_of_their_profile():
    from effopt.gpu.inventory import MigSlice

    inv = Inventory.of([InventoryNode("m", (GpuDevice(0, "A100", mig_enabled=True), GpuDevice(1, "A100")),
                                      mig=(MigSlice("3g.20gb", 0), MigSlice("3g.20gb", 0)))], "nvml", "x")
    wanted = wanted_pools(inv, "gpu", [])
    assert {k: v[0] for k, v in wanted.items()} == {"effopt_gpu": 3, "effopt_gpu_A100": 1, "effopt_gpu_mig-3g.20gb": 2}


# -- [effopt] gpu_quotas ---------------------------------------------------------------------------------------
def test_quotas_parse_and_show():
    s = Settings.from_mapping({"gpu_quotas": "team-a:A100=4, team-b:*=8,team-c:T4=0.5"}, "/h")
    assert s.gpu_quotas == (GpuQuota("team-a", "A100", 4000), GpuQuota("team-b", "*", 8000),
                            GpuQuota("team-c", "T4", 500))
    assert dict(s.describe())["gpu_quotas"] == "team-a:A100=4, team-b:*=8, team-c:T4=0.5"
    assert Settings.from_mapping({}, "/h").gpu_quotas == ()


@pytest.mark.parametrize(("text", "message"), [
    ("team-a:A100=4,team-b*=8", "item 2 'team-b*=8' lacks the ':' or the '='"),
    ("team-a:A100=four", "item 1 'team-a:A100=four' has 'four' GPUs: a positive number with at most 3 decimals"),
    ("team-a:A100=0", "item 1 'team-a:A100=0' has '0' GPUs"),
    (":A100=1", "item 1 ':A100=1' has tenant ''"),
    ("a:A100=1,a:A100=2", "item 2 'a:A100=2' repeats the quota of a:A100"),
    ("a:A100=1,,b:*=1", "item 2 '' is empty"),
])
def test_a_malformed_quota_is_a_config_error_naming_the_item(text, message):
    with pytest.raises(ConfigError) as err:
        parse_gpu_quotas(text)
    assert message in str(err.value) and "AIRFLOW__EFFOPT__GPU_QUOTAS" in str(err.value)
    with pytest.raises(ConfigError, match="gpu_quotas is invalid"):
        Settings.from_mapping({"gpu_quotas": text}, "/h")


def test_the_policy_option_lists_exactly_the_engine_s_policies():
    from effopt.config import OPTIONS
    from effopt.gpu.policies import REGISTRY

    option = next(o for o in OPTIONS if o.key == "gpu_policy")
    assert set(option.choices) == set(REGISTRY) and option.default == "effopt"
