"""Temporal smoothing of landmark arrays: Kalman (constant velocity), One Euro, or none.

All state for a track lives in arrays shaped like the measurement (e.g. (K,2)), so one update is
a handful of numpy operations whatever K is. The Kalman filter is filterpy's constant-velocity
model: its process noise comes from filterpy's `Q_discrete_white_noise`; filterpy's KalmanFilter
object itself holds one filter, and K*2 of them per frame would be K*2 Python objects, so the
predict/update equations of the same model are applied here to all coordinates at once (each
coordinate is an independent 2-state filter: position, velocity).

The shape-aware stabilizer (`shape`) splits 68-point faces with a statistical shape model
(models/shape.py) into a similarity (head motion) and the shape in the model's frame (PCA
coefficients, clipped to plausible values, plus the residual the model does not describe: a
person's own detail, and blinks, which 300-W's training faces hardly show). Each part has its own
One Euro setting: the head follows with little lag, and the shape, no longer moved by the head,
can be held steady and still open up for a fast blink or jaw drop.

Noise is expressed in face-size units (the `scale` passed in, e.g. the face box side), so one
setting fits near and far faces; the measurement noise of each point grows as its confidence falls.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.schema import setting
from models.shape import apply_similarity, load_shape_model


@dataclass
class KalmanConfig:
    process_noise: float = setting(10.0, 1e-9, 1e9, help="acceleration variance, (face sides / s^2)^2; chosen on "
                                   "`bench jitter` (lag <= 0.5 frames on a jump)")
    measurement_noise: float = setting(2e-5, 1e-12, 1.0, help="position variance at confidence 1, face sides^2")
    min_confidence: float = setting(0.05, 0.0, 1.0, help="a point's confidence counts at least this much (its noise is bounded)")


class KalmanSmoother:
    def __init__(self, cfg: KalmanConfig | None = None):
        self.cfg = cfg or KalmanConfig()
        self.reset()

    def reset(self) -> None:
        self.x = None        # (..., 2): position, velocity per coordinate
        self.P = None        # (..., 2, 2)
        self.t = None

    def update(self, z: np.ndarray, confidence: np.ndarray | None, timestamp_s: float, scale: float = 1.0) -> np.ndarray:
        """z (...) measurement, confidence broadcastable to z's leading dims (e.g. (K,) for (K,2))."""
        z = np.asarray(z, np.float64)
        conf = np.ones(z.shape[:-1] if z.ndim > 1 else ()) if confidence is None else np.asarray(confidence, np.float64)
        r = self.cfg.measurement_noise * scale ** 2 / np.maximum(conf, self.cfg.min_confidence)[..., None] ** 2
        r = np.broadcast_to(r, z.shape)
        if self.x is None:
            self.x = np.stack([z, np.zeros_like(z)], -1)
            self.P = np.zeros(z.shape + (2, 2))
            self.P[..., 0, 0] = r
            self.P[..., 1, 1] = r * 1e4
            self.t = timestamp_s
            return z.copy()
        dt = max(timestamp_s - self.t, 1e-3)
        self.t = timestamp_s
        F = np.array([[1.0, dt], [0.0, 1.0]])
        from filterpy.common import Q_discrete_white_noise  # here: filterpy loads scipy.stats (1.4 s at start-up)
        Q = Q_discrete_white_noise(dim=2, dt=dt, var=self.cfg.process_noise * scale ** 2)
        # predict
        x = self.x @ F.T
        P = F @ self.P @ F.T + Q
        # update with H = [1, 0]
        s = P[..., 0, 0] + r
        k = P[..., :, 0] / s[..., None]                     # (..., 2) Kalman gain
        x = x + k * (z - x[..., 0])[..., None]
        P = P - k[..., :, None] * P[..., None, 0, :]
        self.x, self.P = x, P
        return x[..., 0].copy()


@dataclass
class OneEuroConfig:
    """MediaPipe's defaults for landmarks (in face-size units: cutoffs in Hz, beta per face side/s)."""

    min_cutoff: float = setting(0.05, 1e-6, 1000.0, help="Hz: lower = steadier when still")
    beta: float = setting(80.0, 0.0, 1e6, help="per face side/s: higher = less lag when moving")
    d_cutoff: float = setting(1.0, 1e-6, 1000.0, help="Hz: the speed estimate's own cutoff")


class OneEuroSmoother:
    """One Euro filter (Casiez et al. 2012), vectorised over all coordinates."""

    def __init__(self, cfg: OneEuroConfig | None = None):
        self.cfg = cfg or OneEuroConfig()
        self.reset()

    def reset(self) -> None:
        self.x = self.dx = self.t = None

    @staticmethod
    def _alpha(cutoff, dt):
        tau = 1.0 / (2 * np.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def update(self, z: np.ndarray, confidence: np.ndarray | None, timestamp_s: float, scale: float = 1.0) -> np.ndarray:
        z = np.asarray(z, np.float64)
        if self.x is None:
            self.x, self.dx, self.t = z.copy(), np.zeros_like(z), timestamp_s
            return z.copy()
        dt = max(timestamp_s - self.t, 1e-3)
        self.t = timestamp_s
        dx = (z - self.x) / dt / scale
        a_d = self._alpha(self.cfg.d_cutoff, dt)
        self.dx = a_d * dx + (1 - a_d) * self.dx
        cutoff = self.cfg.min_cutoff + self.cfg.beta * np.abs(self.dx)
        a = self._alpha(cutoff, dt)
        self.x = a * z + (1 - a) * self.x
        return self.x.copy()


@dataclass
class ShapeConfig:
    components: int = setting(20, 0, 136, help="shape coefficients kept (of the model's 40): fewer = steadier, stiffer")
    rigid_min_cutoff: float = setting(0.5, 1e-6, 1000.0, help="One Euro on the head's similarity (face-size units), Hz")
    rigid_beta: float = setting(300.0, 0.0, 1e6, help="chosen on the `bench jitter` sweep: follows a fast turn with NME "
                                "below raw, lag 0")
    shape_min_cutoff: float = setting(0.05, 1e-6, 1000.0, help="One Euro on the shape coefficients, Hz")
    shape_beta: float = setting(5.0, 0.0, 1e6, help="chosen on `bench jitter` and the blink/jaw test (3: blinks half lost)")
    d_cutoff: float = setting(1.0, 1e-6, 1000.0, help="Hz: the speed estimate's own cutoff")
    model: str | None = setting(None, help="shape model .npz from `hihtrack fit-shape`; null = the shipped 300-W model")


class ShapeSmoother:
    """Rigid part and shape part filtered apart; faces that the model does not describe (another
    landmark scheme, e.g. MediaPipe's 478 points) get One Euro with the rigid setting."""

    def __init__(self, cfg: ShapeConfig | None = None):
        self.cfg = c = cfg or ShapeConfig()
        self.model = load_shape_model(c.model)
        self.rigid = OneEuroSmoother(OneEuroConfig(c.rigid_min_cutoff, c.rigid_beta, c.d_cutoff))
        self.shape = OneEuroSmoother(OneEuroConfig(c.shape_min_cutoff, c.shape_beta, c.d_cutoff))

    def reset(self) -> None:
        self.rigid.reset()
        self.shape.reset()

    def update(self, z: np.ndarray, confidence: np.ndarray | None, timestamp_s: float, scale: float = 1.0) -> np.ndarray:
        z = np.asarray(z, np.float64)
        if z.shape != self.model.mean.shape:
            return self.rigid.update(z, confidence, timestamp_s, scale)
        similarity, model_pts = self.model.to_model(z)
        k = self.cfg.components
        coefficients = self.model.coefficients(model_pts, k)
        residual = (model_pts - self.model.reconstruct(coefficients)).ravel()
        # the similarity's a, b are px per model unit (a face radius) and t is px: all image px
        similarity = self.rigid.update(similarity, None, timestamp_s, scale)
        shape = self.shape.update(np.concatenate([coefficients, residual]), None, timestamp_s, 1.0)
        return apply_similarity(similarity, self.model.reconstruct(shape[:k]) + shape[k:].reshape(-1, 2))


class NoSmoother:
    def reset(self) -> None:
        pass

    def update(self, z, confidence, timestamp_s, scale=1.0):
        return np.asarray(z, np.float64).copy()


SMOOTHERS = {"kalman": (KalmanSmoother, KalmanConfig), "one_euro": (OneEuroSmoother, OneEuroConfig),
             "shape": (ShapeSmoother, ShapeConfig), "none": (NoSmoother, None)}


def build_smoother(name: str, settings=None):
    """`settings`: the smoother's config dataclass, a dict of its keys, or None for its defaults."""
    if name not in SMOOTHERS:
        raise ValueError(f"unknown smoothing {name!r}; choose one of {sorted(SMOOTHERS)}")
    cls, cfg_cls = SMOOTHERS[name]
    if cfg_cls is None:
        return cls()
    return cls(settings if isinstance(settings, cfg_cls) else cfg_cls(**(settings or {})))
