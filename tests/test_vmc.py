"""VMC over OSC as receivers see it: a loopback OSC server, as VSeeFace or a VRM avatar would run,
checks names per profile, value ranges, the tracking state, the head bone and the lost-face fade."""
import threading
import time

import numpy as np
import pytest

from models.detector import FaceBox
from stream.expressions import vrm_vowels
from stream.frames import Face, Frame, HeadPose
from stream.senders import VMC_PROFILES, VRM1_NAMES, SendError, build_sender

ARKIT = {"eyeBlinkLeft": 0.9, "eyeBlinkRight": 0.85, "jawOpen": 0.6, "mouthSmileLeft": 0.3, "mouthSmileRight": 0.2,
         "mouthPucker": 0.0, "browInnerUp": 0.1}
VRM0 = {"Blink", "Blink_L", "Blink_R", "A", "I", "U", "E", "O", "Joy", "LookUp", "LookDown", "LookLeft", "LookRight"}
ALLOWED = {"vrm0": VRM0, "vrm1": VRM0 | set(VRM1_NAMES.values()),
           "perfect-sync": {k[:1].upper() + k[1:] for k in ARKIT}, "arkit": set(ARKIT)}


def _frame(i: int, t: float, with_face: bool) -> Frame:
    img = np.zeros((48, 64, 3), np.uint8)
    faces = []
    if with_face:
        pose = HeadPose(np.zeros(3), np.array([10.0, 20.0, 600.0 + i]), np.array([0.0, 0.2, 0.0]), np.zeros(3))
        faces = [Face(0, FaceBox(np.array([32.0, 24.0]), 20.0, 1.0), np.zeros((68, 2)), np.ones(68), "300w-68",
                      pose=pose, expressions=dict(ARKIT))]
    return Frame(i, t, img, faces=faces)


@pytest.fixture
def receiver():
    from pythonosc.dispatcher import Dispatcher
    from pythonosc.osc_server import ThreadingOSCUDPServer
    got = {"blend": [], "ok": [], "bone": [], "apply": 0}
    d = Dispatcher()
    d.map("/VMC/Ext/Blend/Val", lambda a, name, value: got["blend"].append((time.monotonic(), name, value)))
    d.map("/VMC/Ext/Blend/Apply", lambda a, *x: got.__setitem__("apply", got["apply"] + 1))
    d.map("/VMC/Ext/OK", lambda a, *x: got["ok"].append(x))
    d.map("/VMC/Ext/Bone/Pos", lambda a, *x: got["bone"].append(x))
    server = ThreadingOSCUDPServer(("127.0.0.1", 0), d)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], got
    server.shutdown()


def _play(url: str, frames: list[Frame], got: dict) -> None:
    sender = build_sender(url)
    for f in frames:
        sender.send(f)           # in order, as the sender thread would, without frame skipping
        time.sleep(0.01)         # a few ms apart, as frames are: loopback UDP drops a burst
    sender.close()
    seen, deadline = -1, time.monotonic() + 10
    while time.monotonic() < deadline and seen != len(got["ok"]):   # until the last datagrams are in
        seen = len(got["ok"])
        time.sleep(0.3)


@pytest.mark.parametrize("profile", sorted(VMC_PROFILES))
def test_every_name_sent_is_in_the_profile(receiver, profile):
    port, got = receiver
    _play(f"osc://127.0.0.1:{port}?profile={profile}", [_frame(i, i / 30, True) for i in range(5)], got)
    names = {n for _, n, _ in got["blend"]}
    assert names and names <= ALLOWED[profile], names - ALLOWED[profile]
    assert all(0.0 <= v <= 1.0 for _, _, v in got["blend"])
    assert got["apply"] == 5 and got["ok"][-1] == (1, 3, 0, 1)


def test_a_preset_only_avatar_blinks_and_speaks_by_default(receiver):
    port, got = receiver
    _play(f"osc://127.0.0.1:{port}", [_frame(0, 0.0, True)], got)
    values = {n: v for _, n, v in got["blend"]}
    assert values["Blink_L"] == pytest.approx(0.9) and values["Blink"] == pytest.approx(0.85)
    assert values["A"] > 0.3                       # an open mouth reads as "A"


def test_vrm1_sends_both_names_with_the_same_values(receiver):
    port, got = receiver
    _play(f"osc://127.0.0.1:{port}?profile=vrm1", [_frame(0, 0.0, True)], got)
    values = {n: v for _, n, v in got["blend"]}
    for old, new in VRM1_NAMES.items():
        if old in values:
            assert values[new] == values[old]


def test_head_bone_rotation_and_optional_position(receiver):
    port, got = receiver
    _play(f"osc://127.0.0.1:{port}", [_frame(i, i / 30, True) for i in range(3)], got)
    name, *pos, qx, qy, qz, qw = got["bone"][-1]
    assert name == "Head" and pos == [0.0, 0.0, 0.0] and abs(np.linalg.norm([qx, qy, qz, qw]) - 1) < 1e-5
    got["bone"].clear()
    _play(f"osc://127.0.0.1:{port}?head_position=1", [_frame(i, i / 30, True) for i in range(3)], got)
    _, *pos, _, _, _, _ = got["bone"][-1]
    assert pos == pytest.approx([0.0, 0.0, 0.002])   # moved 2 mm away since first seen, in metres


def test_a_lost_face_fades_to_neutral_within_half_a_second(receiver):
    port, got = receiver
    frames = [_frame(i, i / 30, True) for i in range(5)] + [_frame(i, i / 30, False) for i in range(5, 30)]
    _play(f"osc://127.0.0.1:{port}", frames, got)
    blink = [v for _, n, v in got["blend"] if n == "Blink_L"]
    assert blink[4] == pytest.approx(0.9)
    assert all(a >= b for a, b in zip(blink[4:], blink[5:]))       # eases down, never jumps back
    assert blink[-1] == 0.0 and len(blink) <= 5 + int(0.5 * 30)     # neutral within 0.5 s of frames
    assert got["ok"][-1] == (1, 3, 0, 0)                            # receivers are told tracking is lost


def test_vowels_pick_the_mouth_shape():
    assert max(vrm_vowels({"jawOpen": 0.9}).items(), key=lambda kv: kv[1])[0] == "A"
    assert max(vrm_vowels({"mouthSmileLeft": 0.9, "mouthSmileRight": 0.9}).items(), key=lambda kv: kv[1])[0] == "I"
    assert max(vrm_vowels({"mouthPucker": 0.9}).items(), key=lambda kv: kv[1])[0] == "U"
    assert max(vrm_vowels({"mouthPucker": 0.8, "jawOpen": 0.8}).items(), key=lambda kv: kv[1])[0] == "O"
    assert all(v == 0 for v in vrm_vowels({}).values())


@pytest.mark.parametrize("url,match", [("osc://127.0.0.1:9?profile=vrm9", "unknown VMC profile"),
                                       ("osc://127.0.0.1:9?colour=red", "unknown option"),
                                       ("udp://no-such-host.invalid:9000", "cannot open")])
def test_bad_sender_urls_are_one_line_errors(url, match):
    with pytest.raises(SendError, match=match):
        build_sender(url).close()
