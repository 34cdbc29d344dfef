"""Right-sizing: recommenders (vpa, krr, effopt) and the backtest that scores them.

Plain Python (no Airflow import).  ``effopt.rightsizing.apply`` turns
recommendations into plans, patches and manifests.
"""

from effopt.rightsizing.backtest import BacktestResult, Score, backtest
from effopt.rightsizing.base import (
    Evidence,
    NotEnoughData,
    Recommendation,
    Recommender,
    get_recommender,
)
from effopt.rightsizing.effopt import EffoptRecommender, EffoptSettings
from effopt.rightsizing.gpu import GPU_OPTIONS, GpuFit, GpuOption, gpu_fit
from effopt.rightsizing.krr import KrrRecommender, KrrSettings
from effopt.rightsizing.vpa import VpaRecommender, VpaSettings

__all__ = [
    "GPU_OPTIONS", "BacktestResult", "EffoptRecommender", "EffoptSettings", "Evidence", "GpuFit", "GpuOption",
    "KrrRecommender", "KrrSettings", "NotEnoughData", "Recommendation", "Recommender", "Score", "VpaRecommender",
    "VpaSettings", "backtest", "get_recommender", "gpu_fit",
]
