"""WebRTC for the live tab, on the web app's own server: aiortc answers the browser's offer on a
FastAPI route beside the mounted Gradio app (no second environment, no fastrtc).

Browser: getUserMedia -> RTCPeerConnection -> the annotated track back into a <video> (the script
in BROWSER_JS, added to the page's head). Server: every camera frame the peer connection receives
is pushed into the tab's LiveSession (a one-frame slot: the tracker never runs in the media path)
and answered at once with the newest finished annotated frame. ICE uses host candidates only: no
STUN/TURN server is contacted unless `gradio.ice_servers` names one.
"""
from __future__ import annotations

import asyncio
import logging
import time

import av
import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from hihtrack import UserError
from ui.live import LiveSessions

log = logging.getLogger("hihtrack.webrtc")


class Offer(BaseModel):
    sid: str
    sdp: str
    type: str


class AnnotatedTrack(MediaStreamTrack):
    """The outgoing video. A reader task takes every camera frame as it arrives (aiortc queues incoming
    frames without bound: when the sender fell behind, the server grew 2 MB/s) and pushes it into the
    tab's session; each outgoing frame is the newest annotated image, stamped with the newest camera
    frame's time. The camera is never more than one frame behind, whatever the sender's pace."""

    kind = "video"

    def __init__(self, camera: MediaStreamTrack, sessions: LiveSessions, sid: str):
        super().__init__()
        self.camera, self.sessions, self.sid = camera, sessions, sid
        self._latest: av.VideoFrame | None = None
        self._fresh = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        try:
            while True:
                frame = await self.camera.recv()
                session = self.sessions.find(self.sid)
                if session is not None:     # converted to BGR by the tracker's thread, only if it takes it
                    session.push(lambda frame=frame: frame.to_ndarray(format="bgr24"))
                self._latest = frame
                self._fresh.set()
        except MediaStreamError:
            self.stop()

    async def recv(self) -> av.VideoFrame:
        await self._fresh.wait()
        self._fresh.clear()
        if self.readyState != "live" or self._latest is None:
            raise MediaStreamError
        frame = self._latest
        session = self.sessions.find(self.sid)
        out = session.latest_bgr if session is not None and session.latest_bgr is not None else None
        if out is None:             # nothing tracked yet: echo the camera
            return frame
        reply = av.VideoFrame.from_ndarray(np.ascontiguousarray(out), format="bgr24")
        reply.pts, reply.time_base = frame.pts, frame.time_base
        return reply

    def stop(self) -> None:
        self._reader.cancel()
        self._fresh.set()          # wake a waiting recv() so it ends
        super().stop()


class RtcServer:
    """The peer connections of one server, by session id (one per tab; a new offer replaces the old)."""

    def __init__(self, sessions: LiveSessions, ice_servers: list[str]):
        self.sessions = sessions
        self.config = RTCConfiguration(iceServers=[RTCIceServer(u) for u in ice_servers])
        self.peers: dict[str, RTCPeerConnection] = {}

    async def answer(self, offer: Offer) -> dict:
        if not self.sessions.known(offer.sid):
            raise HTTPException(404, "unknown session; reload the page")
        try:
            self.sessions.get(offer.sid)          # refused here when the server is full
        except UserError as e:
            raise HTTPException(503, str(e)) from None
        await self.close(offer.sid, keep_session=True)
        pc = self.peers[offer.sid] = RTCPeerConnection(self.config)

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "video":
                pc.addTrack(AnnotatedTrack(track, self.sessions, offer.sid))

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed") and self.peers.get(offer.sid) is pc:
                await self.close(offer.sid)

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type=offer.type))
            await pc.setLocalDescription(await pc.createAnswer())   # gathers the host candidates first
        except (ValueError, AttributeError) as e:
            await self.close(offer.sid)
            raise HTTPException(400, f"bad WebRTC offer ({e}); reload the page") from None
        return {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type}

    async def close(self, sid: str, keep_session: bool = False) -> None:
        pc = self.peers.pop(sid, None)
        if pc is not None:
            await pc.close()
        if not keep_session:
            await asyncio.to_thread(self.sessions.close, sid)

    async def close_all(self) -> None:
        for sid in list(self.peers):
            await self.close(sid)


def add_routes(app: FastAPI, rtc: RtcServer) -> None:
    @app.post("/rtc/offer")
    async def offer(body: Offer) -> dict:
        return await rtc.answer(body)

    @app.post("/rtc/close/{sid}")
    async def close(sid: str) -> dict:
        await rtc.close(sid)
        return {"closed": sid, "at": time.time()}


# The browser side. Buttons are found by id through event delegation, since Gradio re-renders the
# HTML block; the session id comes from the block the server rendered for this tab.
BROWSER_JS = """
<script>
(() => {
  const state = { pc: null, stream: null, t0: 0 };
  const $ = (id) => document.getElementById(id);
  const say = (text) => { const m = $('rtc-msg'); if (m) m.textContent = text; };
  async function start() {
    const sid = $('rtc-sid') && $('rtc-sid').dataset.sid;
    if (!sid) { say('the page is still loading; try again in a moment'); return; }
    if (!window.RTCPeerConnection || !navigator.mediaDevices) {
      say('this browser has no WebRTC: use the "Live webcam (images)" tab'); return; }
    await stop(false);
    try {
      state.stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
    } catch (e) {
      say('camera not available (' + e.name + '): allow the camera for this page, or use the Video file tab'); return;
    }
    const pc = state.pc = new RTCPeerConnection({ iceServers: [] });
    state.stream.getTracks().forEach((t) => pc.addTrack(t, state.stream));
    pc.ontrack = (ev) => { const v = $('rtc-out'); v.srcObject = ev.streams[0] || new MediaStream([ev.track]); v.play(); };
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === 'failed') say('WebRTC connection failed: use the "Live webcam (images)" tab');
      if (pc.connectionState === 'connected') say('streaming over WebRTC');
    };
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((ok) => { if (pc.iceGatheringState === 'complete') ok();
      else pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && ok(); });
    const r = await fetch('/rtc/offer', { method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ sid, sdp: pc.localDescription.sdp, type: pc.localDescription.type }) });
    if (!r.ok) { say((await r.json()).detail || ('server refused WebRTC: ' + r.status)); await stop(false); return; }
    await pc.setRemoteDescription(await r.json());
    state.t0 = performance.now();
    say('connecting…');
  }
  async function stop(tellServer = true) {
    if (state.pc) { state.pc.close(); state.pc = null; }
    if (state.stream) { state.stream.getTracks().forEach((t) => t.stop()); state.stream = null; }
    const sid = $('rtc-sid') && $('rtc-sid').dataset.sid;
    if (tellServer && sid) navigator.sendBeacon('/rtc/close/' + sid);
  }
  window.hihRtcCamera = () => state.stream;   // the local camera stream (bench web: glass-to-glass latency)
  // frames the browser decoded, for the page and for tests
  window.hihRtcStats = async () => {
    if (!state.pc) return null;
    let out = null;
    (await state.pc.getStats()).forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') out = { framesDecoded: s.framesDecoded,
        seconds: (performance.now() - state.t0) / 1000, width: s.frameWidth, height: s.frameHeight };
    });
    return out;
  };
  document.addEventListener('click', (ev) => {
    const id = ev.target && ev.target.id;
    if (id === 'rtc-start') start(); else if (id === 'rtc-stop') { stop(); say('stopped'); }
  });
  window.addEventListener('pagehide', () => stop());
})();
</script>
"""


def session_html(sid: str) -> str:
    """The live tab's WebRTC block for one browser tab."""
    return (f'<div id="rtc-sid" data-sid="{sid}"></div>'
            '<div style="display:flex;gap:8px;margin-bottom:6px">'
            '<button id="rtc-start" class="lg primary">Start camera</button>'
            '<button id="rtc-stop" class="lg secondary">Stop</button></div>'
            '<video id="rtc-out" autoplay playsinline muted style="width:100%;max-width:960px;background:#111"></video>'
            '<div id="rtc-msg">press Start camera</div>')
