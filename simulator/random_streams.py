"""Counter-based random numbers keyed by (seed, stream, ids): common random numbers across arms.

A draw depends only on its keys (e.g. request id and item id), never on how many draws came
before, so two arms that show the same ad in the same request see the same click coin, and a
user's traffic is the same whichever arm the user is in (variance reduction by CRN).
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)

STREAMS = {name: i + 1 for i, name in enumerate(
    ("sessions", "session_time", "surface", "extra_requests", "query", "context", "pacing",
     "view", "click", "conversion", "view_conversion", "delay", "dwell", "value", "assignment"))}


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser (Steele et al. 2014): a bijective avalanche on uint64."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def uniforms(seed: int, stream: str, *keys: np.ndarray) -> np.ndarray:
    """U(0, 1) draws, one per element of the broadcast `keys` (integer arrays), for `stream`."""
    if stream not in STREAMS:
        raise ValueError(f"unknown random stream {stream!r}; add it to STREAMS")
    with np.errstate(over="ignore"):
        state = _mix(np.asarray([(seed & 0xFFFFFFFF) * 1000 + STREAMS[stream]], dtype=np.uint64) + _GOLDEN)
        for key in np.broadcast_arrays(*[np.asarray(k) for k in keys]):
            state = _mix(state ^ (key.astype(np.int64).view(np.uint64) + _GOLDEN))
    return ((state >> np.uint64(11)).astype(np.float64) + 0.5) * (1.0 / (1 << 53))


def normals(seed: int, stream: str, *keys: np.ndarray) -> np.ndarray:
    """Standard normal draws keyed like `uniforms` (Box-Muller over two keyed uniforms)."""
    u1 = uniforms(seed, stream, *keys)
    u2 = uniforms(seed + 7919, stream, *keys)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def exponentials(seed: int, stream: str, mean: float | np.ndarray, *keys: np.ndarray) -> np.ndarray:
    """Exponential draws with the given mean, keyed like `uniforms`."""
    return -np.asarray(mean) * np.log(uniforms(seed, stream, *keys))
