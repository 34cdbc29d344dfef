"""Right-sizing: recommenders (vpa, krr, effopt) and the backtest that scores them.

Plain Python (no Airflow import).  ``effopt.rightsizing.apply`` turns
recommendations into plans, patches and manifests.
"""

from effopt.rightsizing.backtest import BacktestResult, HistoryBand, Score, backtest, fold_of, gap_closed
from effopt.rightsizing.base import (
    Evidence,
    NotEnoughData,
    Recommendation,
    Recommender,
    get_recommender,
    recommender_class,
    recommender_names,
)
from effopt.rightsizing.effopt import EffoptRecommender, EffoptSettings
from effopt.rightsizing.gpu import GPU_OPTIONS, GpuFit, GpuOption, gpu_fit
from effopt.rightsizing.krr import KrrRecommender, KrrSettings
from effopt.rightsizing.oom import OomReplan, oom_bump, plan_after_oom
from effopt.rightsizing.settings import SettingError, describe, parse_assignments, parse_settings
from effopt.rightsizing.vpa import VpaRecommender, VpaSettings

__all__ = [
    "GPU_OPTIONS", "BacktestResult", "EffoptRecommender", "EffoptSettings", "Evidence", "GpuFit", "GpuOption",
    "HistoryBand", "KrrRecommender", "KrrSettings", "NotEnoughData", "OomReplan", "Recommendation", "Recommender",
    "Score", "SettingError", "VpaRecommender", "VpaSettings", "backtest", "describe", "fold_of", "gap_closed",
    "get_recommender", "gpu_fit", "oom_bump", "parse_assignments", "parse_settings", "plan_after_oom",
    "recommender_class", "recommender_names",
]
