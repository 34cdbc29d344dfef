"""Spot placement: prices, interruption risk, instance choice, deadline-aware execution (plain Python).

* :mod:`effopt.spot.catalog`: one :class:`PriceCatalog` over on-demand and spot
  prices per (instance type, region, AZ ID): the embedded snapshot
  (:class:`SnapshotCatalog`) or live EC2 prices (:class:`Ec2Catalog`, a boto3
  client passed in);
* :mod:`effopt.spot.risk`: Spot Instance Advisor band -> hourly hazard; observed
  availability per zone; the semi-Markov availability model effopt plans with;
* :mod:`effopt.spot.choose`: :func:`choose` ranks (type, zone, capacity type)
  offerings of a :class:`JobSpec` by expected cost per useful hour and returns a
  :class:`Placement` (``as_dict()`` is JSON-safe);
* :mod:`effopt.spot.policies`: on-demand, greedy, uniform-progress (Can't Be
  Late) and effopt, deciding each tick: spot in zone z, on-demand, or wait;
* :mod:`effopt.spot.traces` / :mod:`effopt.spot.simulate`: the spot-traces
  importer and the replay; :mod:`effopt.spot.optimal`: the offline optimum, a
  lower bound for any policy;
* what the Airflow layer runs (:mod:`effopt.operators.spot`), on clients passed
  in: :mod:`effopt.spot.fleet` (EC2 CreateFleet once per step, deterministic
  ClientTokens, owner tags, unavailable offerings, top-up or rollback),
  :mod:`effopt.spot.cleanup` (the orphan rule), :mod:`effopt.spot.interruptions`
  (IMDSv2 and EventBridge notices) and :mod:`effopt.spot.kubernetes` (pods on
  spot nodes, disruptions).

No Airflow import here: the Airflow layer builds on :func:`choose` and the policies.
"""

from effopt.spot.catalog import (
    AdvisorBand,
    Ec2Catalog,
    InstanceSpec,
    PriceCatalog,
    PriceQuote,
    SnapshotCatalog,
    catalog_for,
)
from effopt.spot.choose import JobSpec, Offering, Placement, choose
from effopt.spot.errors import SpotError, TraceError, UnknownInstanceType
from effopt.spot.policies import (
    POLICIES,
    Action,
    EffoptPolicy,
    GreedyPolicy,
    Job,
    Market,
    Observation,
    OnDemandPolicy,
    Policy,
    UniformProgressPolicy,
    get_policy,
)
from effopt.spot.risk import AvailabilityModel, Hazard, advisor_hazard, fit_availability_model, observe_zones
from effopt.spot.traces import SpotTrace, TraceGroup, load_trace, load_traces

__all__ = [
    "POLICIES", "Action", "AdvisorBand", "AvailabilityModel", "Ec2Catalog", "EffoptPolicy", "GreedyPolicy", "Hazard",
    "InstanceSpec", "Job", "JobSpec", "Market", "Observation", "Offering", "OnDemandPolicy", "Placement", "Policy",
    "PriceCatalog", "PriceQuote", "SnapshotCatalog", "SpotError", "SpotTrace", "TraceError", "TraceGroup",
    "UniformProgressPolicy", "UnknownInstanceType", "advisor_hazard", "catalog_for", "choose",
    "fit_availability_model", "get_policy", "load_trace", "load_traces", "observe_zones",
]
