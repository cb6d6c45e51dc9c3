"""Network outputs for avatars and AR: VMC over OSC, a compact JSON packet over UDP, and WebSocket.

    --send osc://127.0.0.1:39539   VMC protocol (VSeeFace & co.): /VMC/Ext/Blend/Val name value ...,
                                   /VMC/Ext/Blend/Apply, /VMC/Ext/Bone/Pos "Head" px py pz qx qy qz qw,
                                   /VMC/Ext/OK 1, /VMC/Ext/T time
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
from urllib.parse import urlparse

import cv2
import numpy as np

from models.schema import UserError
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
            "expressions": {k: round(float(v), 3) for k, v in (f.expressions or {}).items()}})
    return {"frame": frame.index, "t": round(frame.timestamp_s, 4), "width": frame.image.shape[1],
            "height": frame.image.shape[0], "faces": faces}


def head_quaternion(rvec: np.ndarray) -> tuple[float, float, float, float]:
    """Head rotation relative to a frontal face, as a Unity (left-handed: x right, y up, z forward)
    quaternion (x, y, z, w), the frame VMC bones use. Rodrigues vector -> rotation matrix in the
    template's right-handed frame (stream/pose.py) -> flip z for Unity."""
    from scipy.spatial.transform import Rotation

    r, _ = cv2.Rodrigues(np.asarray(rvec, np.float64))
    x, y, z, w = Rotation.from_matrix(r @ np.diag([1.0, -1.0, -1.0])).as_quat()
    return float(-x), float(-y), float(z), float(w)


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


class VMCSender(_Sender):
    def __init__(self, url: str, host: str, port: int):
        from pythonosc.udp_client import SimpleUDPClient
        self.client = SimpleUDPClient(host, port)
        super().__init__(url)

    def send(self, frame: Frame) -> None:
        c = self.client
        c.send_message("/VMC/Ext/OK", 1 if frame.faces else 0)
        c.send_message("/VMC/Ext/T", float(frame.timestamp_s))
        if not frame.faces:
            return
        face = frame.faces[0]    # an avatar follows the first tracked face
        for name, value in (face.expressions or {}).items():
            c.send_message("/VMC/Ext/Blend/Val", [name, float(value)])
        c.send_message("/VMC/Ext/Blend/Apply", [])
        pose = face.pose_smoothed or face.pose
        if pose is not None:
            c.send_message("/VMC/Ext/Bone/Pos", ["Head", 0.0, 0.0, 0.0, *head_quaternion(pose.rvec)])


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
    try:
        return SENDERS[u.scheme](url, host, port)
    except OSError as e:
        raise SendError(f"cannot open {url}: {e}") from None
