"""Network outputs for avatars and AR: VMC over OSC, a compact JSON packet over UDP, and WebSocket.

    --send osc://127.0.0.1:39539   VMC protocol (VSeeFace & co.): /VMC/Ext/Blend/Val name value ...,
                                   /VMC/Ext/Blend/Apply, /VMC/Ext/Bone/Pos "Head" px py pz qx qy qz qw,
                                   /VMC/Ext/OK 1 3 0 tracking, /VMC/Ext/T time. Names by profile
                                   (?profile=vrm0 default | vrm1 | perfect-sync | arkit); a lost face
                                   fades to neutral in FADE_S; ?head_position=1 sends the head's position
    --send udp://127.0.0.1:9000    one JSON datagram per frame (format: `packet()` below, README)
    --send ws://127.0.0.1:8765     serves the same JSON to every connected WebSocket client

Each sender has its own thread and a one-frame slot: a slow or absent peer never stalls tracking;
frames it could not take in time are counted in `skipped`.
"""
from __future__ import annotations

import asyncio
import json
import socket
import threading
from urllib.parse import parse_qsl, urlparse

import cv2
import numpy as np

from models.schema import UserError
from stream.expressions import vrm_vowels
from stream.frames import Frame
from stream.pipeline import LatestSlot


def packet(frame: Frame) -> dict:
    """The per-frame message: landmarks (smoothed, image px), pose, ARKit-named expression values."""
    faces = []
    for f in frame.faces:
        pose = f.pose_smoothed or f.pose
        faces.append({
            "id": f.track_id, "scheme": f.scheme,
            # float64 before rounding: float32 values would print as 204.80999755859375
            "landmarks": np.round(np.asarray(f.smoothed_px if f.smoothed_px is not None else f.landmarks_px,
                                             np.float64), 2).tolist(),
            "pose": None if pose is None else {"yaw": round(float(pose.rotation_deg[0]), 2),
                                               "pitch": round(float(pose.rotation_deg[1]), 2),
                                               "roll": round(float(pose.rotation_deg[2]), 2),
                                               "translation": np.round(pose.translation, 1).tolist()},
            "pupils": None if f.pupils_px is None else np.round(np.asarray(f.pupils_px, np.float64), 2).tolist(),
            "expressions": {k: round(float(v), 3) for k, v in (f.expressions or {}).items()}})
    return {"frame": frame.index, "t": round(frame.timestamp_s, 4), "width": frame.image.shape[1],
            "height": frame.image.shape[0], "faces": faces}


def _unity_quaternion(r_head: np.ndarray) -> tuple[float, float, float, float]:
    """A rotation in the head frame of stream/pose.py (camera axes, identity = a frontal face) as a
    Unity (left-handed: x right, y up, z forward) quaternion (x, y, z, w), the frame VMC bones use."""
    from scipy.spatial.transform import Rotation

    x, y, z, w = Rotation.from_matrix(r_head).as_quat()
    return float(-x), float(-y), float(z), float(w)


def head_quaternion(rvec: np.ndarray) -> tuple[float, float, float, float]:
    """Head rotation relative to a frontal face: Rodrigues vector of the template pose (stream/pose.py)."""
    r, _ = cv2.Rodrigues(np.asarray(rvec, np.float64))
    return _unity_quaternion(r @ np.diag([1.0, -1.0, -1.0]))


EYE_YAW_DEG, EYE_PITCH_DEG = 30.0, 20.0     # eyeball rotation at a full look sideways / up or down


def eye_quaternion(yaw_deg: float, pitch_deg: float) -> tuple[float, float, float, float]:
    """An eye bone's rotation in the head, with the head pose's conventions (+ yaw = towards image left,
    + pitch = down)."""
    y, p = np.radians(yaw_deg), np.radians(pitch_deg)
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    return _unity_quaternion(ry @ rx)


def eye_bones(shapes: dict[str, float]) -> dict[str, tuple[float, float, float, float]]:
    """VMC LeftEye/RightEye rotations from the eyeLook values; {} when the face has no pupils."""
    if "eyeLookInLeft" not in shapes:
        return {}
    g = lambda k: shapes.get(k, 0.0)  # noqa: E731
    # a look to image left is "out" for the subject's right eye and "in" for the left one
    return {"RightEye": eye_quaternion((g("eyeLookOutRight") - g("eyeLookInRight")) * EYE_YAW_DEG,
                                       (g("eyeLookDownRight") - g("eyeLookUpRight")) * EYE_PITCH_DEG),
            "LeftEye": eye_quaternion((g("eyeLookInLeft") - g("eyeLookOutLeft")) * EYE_YAW_DEG,
                                      (g("eyeLookDownLeft") - g("eyeLookUpLeft")) * EYE_PITCH_DEG)}


class _Sender:
    def __init__(self, url: str):
        self.url = url
        self.slot = LatestSlot()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"send {url}")
        self._thread.start()

    @property
    def skipped(self) -> int:
        return self.slot.dropped

    def write(self, frame: Frame) -> None:
        self.slot.put(frame)

    def _run(self) -> None:
        import queue
        while not self._stop.is_set():
            try:
                frame = self.slot.get(timeout=0.2)
            except queue.Empty:
                continue
            if frame is None:
                break
            try:
                self.send(frame)
            except OSError:
                pass   # no listener on a UDP port is normal: the next frame tries again

    def send(self, frame: Frame) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.slot.put(None)
        self._stop.set()
        self._thread.join(timeout=5)


def _pascal(name: str) -> str:
    return name[:1].upper() + name[1:]


def _vrm0(shapes: dict[str, float]) -> dict[str, float]:
    """VRM 0.x preset clips (what an avatar without perfect-sync clips has)."""
    g = lambda k: shapes.get(k, 0.0)  # noqa: E731
    bl, br = g("eyeBlinkLeft"), g("eyeBlinkRight")
    look = {}
    if "eyeLookInLeft" in shapes:      # the avatar looks to its own left when the subject looks to theirs
        look = {"LookLeft": (g("eyeLookOutLeft") + g("eyeLookInRight")) / 2,
                "LookRight": (g("eyeLookInLeft") + g("eyeLookOutRight")) / 2,
                "LookUp": (g("eyeLookUpLeft") + g("eyeLookUpRight")) / 2,
                "LookDown": (g("eyeLookDownLeft") + g("eyeLookDownRight")) / 2}
    joy = (g("mouthSmileLeft") + g("mouthSmileRight")) / 2
    return {"Blink": min(bl, br), "Blink_L": bl, "Blink_R": br, **vrm_vowels(shapes), "Joy": joy, **look}


# VRM 1.0 expression names for the VRM 0.x presets (VMC protocol: a VRM 1.0 sender sends both)
VRM1_NAMES = {"Blink": "blink", "Blink_L": "blinkLeft", "Blink_R": "blinkRight", "A": "aa", "I": "ih", "U": "ou",
              "E": "ee", "O": "oh", "Joy": "happy", "LookUp": "lookUp", "LookDown": "lookDown",
              "LookLeft": "lookLeft", "LookRight": "lookRight"}

def _vrm1(shapes: dict[str, float]) -> dict[str, float]:
    """VRM 1.0 names, sent with the VRM 0 ones."""
    v0 = _vrm0(shapes)
    return {**v0, **{VRM1_NAMES[k]: v for k, v in v0.items()}}


# name profile -> ARKit camelCase values to the (name, value) pairs a receiver of that kind matches
# (case-sensitively, as UniVRM does)
VMC_PROFILES = {
    "vrm0": _vrm0,
    "vrm1": _vrm1,
    "perfect-sync": lambda s: {_pascal(k): v for k, v in s.items()},
    "arkit": dict,
}
FADE_S = 0.4    # a lost face eases to neutral this fast (receivers freeze on the last values otherwise)


class VMCSender(_Sender):
    """VMC over OSC. Query options: ?profile=vrm0|vrm1|perfect-sync|arkit (the blendshape names;
    vrm0 by default, which any VRM avatar has) and ?head_position=1 (send how far the head moved
    since it was first tracked, in metres; off by default: receivers place the head themselves)."""

    def __init__(self, url: str, host: str, port: int, profile: str = "vrm0", head_position: bool = False):
        from pythonosc.udp_client import SimpleUDPClient
        self.client = SimpleUDPClient(host, port)
        self.names = VMC_PROFILES[profile]
        self.head_position = head_position
        self._last: dict[str, float] = {}
        self._lost_at_s: float | None = None
        self._head_origin: np.ndarray | None = None
        super().__init__(url)

    def send(self, frame: Frame) -> None:
        c = self.client
        tracking = bool(frame.faces)
        c.send_message("/VMC/Ext/OK", [1, 3, 0, int(tracking)])     # loaded, calibrated, normal mode, tracking
        c.send_message("/VMC/Ext/T", float(frame.timestamp_s))
        if tracking:
            face = frame.faces[0]    # an avatar follows the first tracked face
            self._last, self._lost_at_s = self.names(face.expressions or {}), None
            values = self._last
        else:
            if not self._last:
                return
            self._lost_at_s = frame.timestamp_s if self._lost_at_s is None else self._lost_at_s
            keep = max(0.0, 1 - (frame.timestamp_s - self._lost_at_s) / FADE_S)
            values = {k: v * keep for k, v in self._last.items()}
            if keep == 0:
                self._last = {}
        for name, value in values.items():
            c.send_message("/VMC/Ext/Blend/Val", [name, float(np.clip(value, 0.0, 1.0))])
        c.send_message("/VMC/Ext/Blend/Apply", [])
        pose = (frame.faces[0].pose_smoothed or frame.faces[0].pose) if tracking else None
        if pose is not None:
            c.send_message("/VMC/Ext/Bone/Pos", ["Head", *self._head_offset_m(pose.translation), *head_quaternion(pose.rvec)])
            for bone, q in eye_bones(frame.faces[0].expressions or {}).items():
                c.send_message("/VMC/Ext/Bone/Pos", [bone, 0.0, 0.0, 0.0, *q])

    def _head_offset_m(self, translation_mm: np.ndarray) -> list[float]:
        """The head's move since it was first tracked, in metres on Unity's axes (y up), or zeros."""
        if not self.head_position:
            return [0.0, 0.0, 0.0]
        t = np.asarray(translation_mm, np.float64) * [1, -1, 1] / 1000
        if self._head_origin is None:
            self._head_origin = t
        return (t - self._head_origin).tolist()


class UDPSender(_Sender):
    def __init__(self, url: str, host: str, port: int):
        self.addr = (host, port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        super().__init__(url)

    def send(self, frame: Frame) -> None:
        self.sock.sendto(json.dumps(packet(frame), separators=(",", ":")).encode(), self.addr)


class WebSocketSender(_Sender):
    """A WebSocket server; every connected client receives each frame's JSON."""

    def __init__(self, url: str, host: str, port: int):
        from websockets.asyncio.server import broadcast, serve
        self._broadcast = broadcast
        self.loop = asyncio.new_event_loop()
        self.clients: set = set()
        ready = threading.Event()

        async def handler(ws):
            self.clients.add(ws)
            try:
                await ws.wait_closed()
            finally:
                self.clients.discard(ws)

        async def main():
            self._server = await serve(handler, host, port)
            ready.set()
            await self._server.wait_closed()

        self._loop_thread = threading.Thread(target=self.loop.run_until_complete, args=(main(),), daemon=True)
        self._loop_thread.start()
        if not ready.wait(10):
            raise OSError(f"could not serve WebSocket on {host}:{port}")
        super().__init__(url)

    def send(self, frame: Frame) -> None:
        msg = json.dumps(packet(frame), separators=(",", ":"))
        self.loop.call_soon_threadsafe(lambda: self._broadcast(set(self.clients), msg))

    def close(self) -> None:
        super().close()
        self.loop.call_soon_threadsafe(self._server.close)
        self._loop_thread.join(timeout=5)


SENDERS = {"osc": VMCSender, "udp": UDPSender, "ws": WebSocketSender}
DEFAULT_PORTS = {"osc": 39539, "udp": 9000, "ws": 8765}


class SendError(UserError, ValueError):
    pass


def build_sender(url: str) -> _Sender:
    u = urlparse(url)
    if u.scheme not in SENDERS:
        raise SendError(f"cannot send to {url!r}; use osc://host:port (VMC), udp://host:port or ws://host:port")
    host = u.hostname or "127.0.0.1"
    try:
        port = u.port or DEFAULT_PORTS[u.scheme]
    except ValueError:
        raise SendError(f"bad port in {url!r}") from None
    options = dict(parse_qsl(u.query))
    kwargs = {}
    if u.scheme == "osc":
        profile = options.pop("profile", "vrm0")
        if profile not in VMC_PROFILES:
            raise SendError(f"unknown VMC profile {profile!r} in {url!r}; use one of {', '.join(VMC_PROFILES)}")
        kwargs = {"profile": profile, "head_position": options.pop("head_position", "0") in ("1", "true", "yes")}
    if options:
        raise SendError(f"unknown option {', '.join(options)} in {url!r}; osc:// takes profile= and head_position=")
    try:
        socket.getaddrinfo(host, port)       # UDP would only fail at the first datagram, silently
        return SENDERS[u.scheme](url, host, port, **kwargs)
    except (OSError, UnicodeError) as e:     # an unresolvable or unbindable host
        raise SendError(f"cannot open {url}: {e}") from None
