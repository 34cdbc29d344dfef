"""Small, real, deterministic functions used by the example specs in ``include/graphs/``.

Prices are synthesised from the symbol (no random generator: a sum of
sinusoids whose phases come from the symbol's SHA-256), features are rolling
statistics, and models are fitted in closed form or by plain gradient descent
with numpy.  ``train_mlp`` uses CuPy on a GPU when one is usable and numpy on
the CPU otherwise.  Models are returned as dicts of floats so they travel
through XCom as JSON.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np


def load_data(symbol: str, limit: int = 1000) -> np.ndarray:
    """``limit`` daily closing prices of ``symbol`` (deterministic per symbol)."""
    if limit < 10:
        raise ValueError(f"limit must be at least 10, not {limit}")
    seed = hashlib.sha256(symbol.encode()).digest()
    phases = np.frombuffer(seed[:8], dtype=np.uint8).astype(np.float64) / 255.0 * 2 * np.pi
    t = np.arange(limit, dtype=np.float64)
    periods = np.array([5.0, 11.0, 23.0, 47.0, 97.0, 199.0, 401.0, 811.0])
    amplitude = 0.02 / np.sqrt(np.arange(1, 9))
    returns = (amplitude[:, None] * np.sin(2 * np.pi * t[None, :] / periods[:, None] + phases[:, None])).sum(axis=0)
    drift = (seed[8] - 128) / 128 * 1e-3
    return 100.0 * np.exp(np.cumsum(returns * 0.1 + drift))


def compute_features(raw_data: np.ndarray, window: int = 20) -> np.ndarray:
    """Per day: log return, rolling mean return, rolling volatility, momentum, price z-score.

    Row ``i`` describes day ``i + window``; shape ``(len(raw_data) - window - 1, 5)``.
    """
    prices = np.asarray(raw_data, dtype=np.float64)
    if window < 2 or len(prices) <= window + 1:
        raise ValueError(f"need more than window + 1 = {window + 1} prices, got {len(prices)}")
    log_ret = np.diff(np.log(prices))
    kernel = np.ones(window) / window
    mean_ret = np.convolve(log_ret, kernel, mode="valid")
    sq = np.convolve(log_ret**2, kernel, mode="valid")
    vol = np.sqrt(np.maximum(sq - mean_ret**2, 0.0))
    momentum = prices[window:] / prices[:-window] - 1.0
    price_mean = np.convolve(prices, kernel, mode="valid")
    price_sq = np.convolve(prices**2, kernel, mode="valid")
    price_std = np.sqrt(np.maximum(price_sq - price_mean**2, 1e-12))
    zscore = (prices[window - 1 :] - price_mean) / price_std
    n = len(log_ret) - window + 1
    features = np.column_stack([log_ret[window - 1 :], mean_ret[:n], vol[:n], momentum[:n], zscore[1 : n + 1]])
    return features[:-1]


def make_labels(raw_data: np.ndarray, window: int = 20, horizon: int = 1) -> np.ndarray:
    """The log return over the next ``horizon`` days, aligned with :func:`compute_features` rows."""
    log_prices = np.log(np.asarray(raw_data, dtype=np.float64))
    day = np.arange(len(log_prices) - window - 1) + window
    ahead = np.minimum(day + horizon, len(log_prices) - 1)
    return log_prices[ahead] - log_prices[day]


def standardize(features: np.ndarray) -> np.ndarray:
    """Columns scaled to zero mean and unit variance."""
    x = np.asarray(features, dtype=np.float64)
    return (x - x.mean(axis=0)) / np.maximum(x.std(axis=0), 1e-12)


def clip_outliers(features: np.ndarray, limit: float = 4.0) -> np.ndarray:
    """Values clipped to ``[-limit, limit]`` (after standardising)."""
    return np.clip(features, -limit, limit)


def split(
    features: np.ndarray, labels: np.ndarray, test_fraction: float = 0.2
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Chronological train/test split: ``({"x", "y"}, {"x", "y"})``."""
    n = min(len(features), len(labels))
    cut = int(n * (1 - test_fraction))
    if cut < 2 or cut >= n:
        raise ValueError(f"test_fraction {test_fraction} leaves no train or test rows out of {n}")
    return {"x": features[:cut], "y": labels[:cut]}, {"x": features[cut:n], "y": labels[cut:n]}


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    total = float(((y - y.mean()) ** 2).sum())
    return 1.0 - float(((y - pred) ** 2).sum()) / total if total > 0 else 0.0


def train_model(features: np.ndarray, alpha: float = 1.0, horizon: int = 1) -> dict[str, Any]:
    """Ridge regression of the next return on the features (the seed pipeline's model).

    The target is the first feature column (log return) ``horizon`` rows ahead.
    """
    x = np.asarray(features, dtype=np.float64)
    return train_ridge({"x": x[:-horizon], "y": x[horizon:, 0]}, alpha=alpha)


def train_ridge(train: dict[str, Any], alpha: float = 1.0) -> dict[str, Any]:
    """Closed-form ridge regression with intercept."""
    x, y = np.asarray(train["x"]), np.asarray(train["y"])
    mean_x, mean_y = x.mean(axis=0), y.mean()
    xc = x - mean_x
    coef = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ (y - mean_y))
    intercept = float(mean_y - mean_x @ coef)
    return {
        "kind": "ridge",
        "alpha": alpha,
        "coef": [float(c) for c in coef],
        "intercept": intercept,
        "train_r2": _r2(y, x @ coef + intercept),
    }


def train_lasso(train: dict[str, Any], alpha: float = 1e-4, iterations: int = 200) -> dict[str, Any]:
    """Lasso regression with intercept by cyclic coordinate descent on the Gram matrix."""
    x, y = np.asarray(train["x"]), np.asarray(train["y"])
    mean_x, mean_y = x.mean(axis=0), y.mean()
    xc, yc = x - mean_x, y - mean_y
    n, d = xc.shape
    gram = xc.T @ xc / n
    corr = xc.T @ yc / n
    coef = np.zeros(d)
    for _ in range(iterations):
        for j in range(d):
            if gram[j, j] == 0:
                continue
            rho = corr[j] - gram[j] @ coef + gram[j, j] * coef[j]
            coef[j] = np.sign(rho) * max(abs(rho) - alpha, 0.0) / gram[j, j]
    intercept = float(mean_y - mean_x @ coef)
    return {
        "kind": "lasso",
        "alpha": alpha,
        "coef": [float(c) for c in coef],
        "intercept": intercept,
        "train_r2": _r2(y, x @ coef + intercept),
    }


def evaluate(model: dict[str, Any], test: dict[str, Any]) -> dict[str, Any]:
    """Test-set metrics of a linear model: R², RMSE and directional accuracy."""
    x, y = np.asarray(test["x"]), np.asarray(test["y"])
    if "layers" in model:
        pred = _mlp_forward(np, model["layers"], x)
    else:
        pred = x @ np.asarray(model["coef"]) + model["intercept"]
    return {
        "kind": model["kind"],
        "r2": _r2(y, pred),
        "rmse": float(np.sqrt(((y - pred) ** 2).mean())),
        "direction_accuracy": float((np.sign(pred) == np.sign(y)).mean()),
        "rows": int(len(y)),
    }


def compare_models(**metrics: dict[str, Any]) -> dict[str, Any]:
    """The metrics of every model, ranked by test R²."""
    ranking = sorted(metrics, key=lambda name: metrics[name]["r2"], reverse=True)
    return {"best": ranking[0], "ranking": ranking, "metrics": metrics}


def describe_prices(raw_data: np.ndarray) -> dict[str, float]:
    """Summary statistics of a price series."""
    prices = np.asarray(raw_data)
    return {
        "first": float(prices[0]),
        "last": float(prices[-1]),
        "min": float(prices.min()),
        "max": float(prices.max()),
    }


# -- GPU training (CuPy when usable, numpy otherwise) --------------------------------


def array_module() -> Any:
    """CuPy when it is installed and a GPU is visible, else numpy."""
    try:
        import cupy  # type: ignore[import-not-found]

        if cupy.cuda.runtime.getDeviceCount() > 0:
            return cupy
    except Exception:  # noqa: BLE001 - no CuPy, no driver or no device all mean: use the CPU
        pass
    return np


def _mlp_forward(xp: Any, layers: list[dict[str, Any]], x: Any) -> Any:
    h = xp.asarray(x)
    for i, layer in enumerate(layers):
        h = h @ xp.asarray(layer["w"]) + xp.asarray(layer["b"])
        if i < len(layers) - 1:
            h = xp.tanh(h)
    return h[:, 0]


def train_mlp(
    train: dict[str, Any], hidden: int = 16, epochs: int = 300, learning_rate: float = 0.05
) -> dict[str, Any]:
    """A one-hidden-layer tanh network fitted by full-batch gradient descent (GPU when available).

    Weights start from a fixed deterministic pattern, so the result depends only on the data.
    """
    xp = array_module()
    x = xp.asarray(np.asarray(train["x"], dtype=np.float64))
    y = xp.asarray(np.asarray(train["y"], dtype=np.float64))
    n, d = x.shape
    scale_y = float(xp.abs(y).max()) or 1.0
    target = y / scale_y
    grid = np.arange(d * hidden, dtype=np.float64).reshape(d, hidden)
    w1 = xp.asarray(np.sin(grid * 1.7 + 0.3) / np.sqrt(d))
    b1 = xp.zeros(hidden)
    w2 = xp.asarray(np.cos(np.arange(hidden, dtype=np.float64) * 2.3 + 0.1)[:, None] / np.sqrt(hidden))
    b2 = xp.zeros(1)
    for _ in range(epochs):
        h = xp.tanh(x @ w1 + b1)
        pred = (h @ w2 + b2)[:, 0]
        err = (pred - target)[:, None] * (2.0 / n)
        grad_w2, grad_b2 = h.T @ err, err.sum(axis=0)
        dh = (err @ w2.T) * (1 - h**2)
        grad_w1, grad_b1 = x.T @ dh, dh.sum(axis=0)
        w1 -= learning_rate * grad_w1
        b1 -= learning_rate * grad_b1
        w2 -= learning_rate * grad_w2
        b2 -= learning_rate * grad_b2

    def host(a: Any) -> list[Any]:
        return (a.get() if hasattr(a, "get") else a).tolist()

    layers = [{"w": host(w1), "b": host(b1)}, {"w": host(w2 * scale_y), "b": host(b2 * scale_y)}]
    pred = _mlp_forward(np, layers, np.asarray(train["x"]))
    return {
        "kind": "mlp",
        "device": "gpu" if xp is not np else "cpu",
        "layers": layers,
        "train_r2": _r2(np.asarray(train["y"]), pred),
    }
