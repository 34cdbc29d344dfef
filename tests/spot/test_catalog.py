"""The price catalog: the embedded snapshot, and the EC2 source.

The ``ec2`` source is tested twice: against moto's ``describe_spot_price_history``
for the call shape (botocore validates every parameter we send, moto answers in
EC2's format and joins zone names to AZ IDs its own way), and against a small
stand-in client for prices, time and pagination, because moto's spot prices are
a constant 0.00001 with a fixed 2006 timestamp and it never paginates.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from effopt.spot.catalog import (
    Ec2Catalog,
    SnapshotCatalog,
    build_snapshot_catalog,
    catalog_for,
    embedded_catalog_path,
)
from effopt.spot.errors import SpotError, UnknownInstanceType


@pytest.fixture(scope="module")
def snap() -> SnapshotCatalog:
    return SnapshotCatalog.load()


def test_known_prices_per_type_and_zone(snap):
    # ec2_catalog_snapshot_34a4a9e8.csv: p3.2xlarge,...,3.06,0.335100,us-east-1,use1-az1
    q = snap.spot("p3.2xlarge", "us-east-1", "use1-az1")
    assert (q.usd_per_hour, q.stale, q.source) == (0.3351, False, "snapshot 34a4a9e8")
    assert snap.on_demand("p3.2xlarge", "us-east-1").usd_per_hour == 3.06
    assert snap.on_demand("p3.16xlarge", "us-west-2").usd_per_hour == 24.48
    spec = snap.instance("p3.2xlarge")
    assert (spec.vcpus, spec.memory_gib, spec.gpu_model, spec.gpu_count, spec.gpu_memory_mib) == (8, 61, "V100", 1,
                                                                                                    16384)
    # the region median over its AZ IDs: use1-az1 0.3351, az2 0.3565, az5 0.3237, az6 0.3538
    assert snap.spot_median("p3.2xlarge", "us-east-1").usd_per_hour == pytest.approx((0.3351 + 0.3538) / 2)
    assert snap.zones("p3.2xlarge", "us-east-1") == ["use1-az1", "use1-az2", "use1-az5", "use1-az6"]
    older = SnapshotCatalog.load(snapshot="e385a0d3")
    assert older.spot("p3.2xlarge", "us-east-1", "use1-az1").usd_per_hour == 0.4995


def test_stale_and_missing_prices_are_reported_never_zero(snap):
    stale = snap.spot("p3.2xlarge", "eu-west-1", "euw1-az2")  # only snapshot 001367d2 has eu-west-1
    assert stale.usd_per_hour == 1.5221 and stale.stale and "001367d2" in stale.note and "older" in stale.note
    gap = snap.spot("p3.2xlarge", "us-east-1", "use1-az3")  # an empty SpotPrice in every snapshot
    assert gap.usd_per_hour is None and gap.missing and "no spot price" in gap.note
    nowhere = snap.spot("p3.2xlarge", "ap-south-1", "aps1-az1")
    assert nowhere.usd_per_hour is None and nowhere.missing
    assert snap.on_demand("p3.2xlarge", "ap-south-1").usd_per_hour is None
    assert snap.spot_median("p3.2xlarge", "ap-south-1").usd_per_hour is None
    assert snap.types_with_gpu("K80", 1) == []  # no p2 in the catalog: K80 traces stay unpriced


def test_unknown_instance_type_names_it(snap):
    with pytest.raises(UnknownInstanceType, match="unknown instance type 'p9.huge'"):
        snap.instance("p9.huge")
    with pytest.raises(SpotError, match="unknown catalog source"):
        catalog_for("pricing-api")


def test_the_embedded_catalog_is_what_build_catalog_makes_of_the_shared_files(real_prices, snap):
    built = build_snapshot_catalog(real_prices)
    assert built == snap.data  # the committed file is not stale
    assert embedded_catalog_path().name == "catalog.json.gz"
    assert [f["file"] for f in built["source"]["files"]][:1] == ["ec2_catalog_snapshot_27f67dd4.csv"]
    assert "not recorded" in built["source"]["dates"]
    assert len(json.dumps(built)) < 100_000


class StandInEc2:
    """describe_availability_zones / describe_spot_price_history with real-looking prices, two pages."""

    meta = type("Meta", (), {"region_name": "us-east-1"})()

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.calls: list[dict] = []

    def describe_availability_zones(self, **kw):
        return {"AvailabilityZones": [{"ZoneName": "us-east-1a", "ZoneId": "use1-az4"},
                                      {"ZoneName": "us-east-1b", "ZoneId": "use1-az6"}]}

    def describe_spot_price_history(self, **kw):
        self.calls.append(kw)
        t = self.now
        if "NextToken" not in kw:
            return {"SpotPriceHistory": [
                {"AvailabilityZone": "us-east-1a", "InstanceType": "p3.2xlarge", "SpotPrice": "0.9100",
                 "Timestamp": t - timedelta(hours=30)},
                {"AvailabilityZone": "us-east-1a", "InstanceType": "p3.2xlarge", "SpotPrice": "0.9300",
                 "Timestamp": t - timedelta(hours=2)},
            ], "NextToken": "page-2"}
        return {"SpotPriceHistory": [
            {"AvailabilityZone": "us-east-1b", "InstanceType": "p3.2xlarge", "SpotPrice": "1.0100",
             "Timestamp": (t - timedelta(hours=50)).isoformat()},
            {"AvailabilityZone": "us-east-1z", "InstanceType": "p3.2xlarge", "SpotPrice": "0.5",
             "Timestamp": t - timedelta(hours=1)},  # a zone the account does not have: ignored
        ]}


def test_ec2_source_paginates_joins_on_az_id_and_reports_age():
    now = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)
    client = StandInEc2(now)
    cat = Ec2Catalog(client, now=now, lookback_days=30)
    assert cat.zones("p3.2xlarge", "us-east-1") == ["use1-az4", "use1-az6"]
    assert len(client.calls) == 2 and client.calls[1]["NextToken"] == "page-2"
    assert client.calls[0]["StartTime"] == now - timedelta(days=30) and client.calls[0]["EndTime"] == now
    fresh = cat.spot("p3.2xlarge", "us-east-1", "use1-az4")
    assert (fresh.usd_per_hour, fresh.age_h, fresh.stale) == (0.93, 2.0, False)
    earlier = cat.spot("p3.2xlarge", "us-east-1", "use1-az4", at=now - timedelta(hours=10))
    assert (earlier.usd_per_hour, earlier.age_h) == (0.91, 20.0)
    old = cat.spot("p3.2xlarge", "us-east-1", "use1-az6")
    assert old.usd_per_hour == 1.01 and old.stale and old.age_h == 50.0 and "50.0 h old" in old.note
    missing = cat.spot("p3.2xlarge", "us-east-1", "use1-az1")
    assert missing.usd_per_hour is None and "no spot price record" in missing.note
    assert cat.on_demand("p3.2xlarge", "us-east-1").usd_per_hour == 3.06  # from the snapshot: EC2 has none
    assert cat.spot("p3.2xlarge", "us-west-2", "usw2-az1").usd_per_hour is None  # another region's client
    assert cat.spot_median("p3.2xlarge", "us-east-1").usd_per_hour == pytest.approx((0.93 + 1.01) / 2)
    assert len(client.calls) == 2  # fetched once per instance type


def test_ec2_lookback_is_at_most_90_days():
    with pytest.raises(SpotError, match="90 days"):
        Ec2Catalog(StandInEc2(datetime.now(timezone.utc)), lookback_days=91)


def test_ec2_source_against_moto_for_the_call_shape():
    boto3 = pytest.importorskip("boto3")
    moto = pytest.importorskip("moto")
    with moto.mock_aws():
        client = boto3.client("ec2", region_name="us-east-1")
        names = {z["ZoneName"]: z["ZoneId"] for z in client.describe_availability_zones()["AvailabilityZones"]}
        cat = Ec2Catalog(client, now=datetime.now(timezone.utc))
        zones = cat.zones("m5.large", "us-east-1")
        assert zones and set(zones) <= set(names.values())  # joined on moto's own name -> ID mapping
        q = cat.spot("m5.large", "us-east-1", zones[0])
        assert q.usd_per_hour == 0.00001  # moto's constant
        assert q.stale and q.age_h > 24 * 365  # moto's records are dated 2006
        assert cat.instance("m5.large").vcpus == 2  # from the snapshot
