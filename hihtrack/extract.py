"""Landmarks for a whole collection: one recording per input, resumable, in parallel or on Ray.

    python run.py extract videos/ more/*.mp4 list.txt --out landmarks/ [--format csv|jsonl|npz]
                          [--workers N | --ray auto|ADDRESS]

Every output is written under `OUT/.partial/` and moved to its final name (sidecar first, data
last) only when its input is finished, so a file with a final name is always complete and a rerun
skips it; a killed run leaves only partial files, which the next run rewrites. A bad input is
reported with its one-line reason and the run goes on. Workers (processes here, Ray actors on a
cluster) each load the model once and take whole inputs, one at a time.
"""
from __future__ import annotations

import glob
import os
import queue
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Iterable

from models.schema import IMAGE_EXTS, UserError, from_mapping
from stream.settings import TrackSettings
from stream.sources import NETWORK_SCHEMES, VIDEO_EXTS

FORMAT_EXT = {"csv": ".csv", "jsonl": ".jsonl", "npz": ".npz"}
PARTIAL = ".partial"


class ExtractError(UserError):
    pass


@dataclass
class Job:
    input: str
    output: str          # the final recording path; written under OUT/.partial/ first


@dataclass
class Result:
    input: str
    output: str
    frames: int = 0
    frames_with_face: int = 0
    seconds: float = 0.0
    error: str | None = None
    skipped: bool = False     # finished by an earlier run

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0


def expand_inputs(specs: Iterable[str]) -> list[str]:
    """Files, folders (their videos; a folder of images is one input), globs, URLs and list files
    (.txt or .list: one input per line, # comments) -> inputs in a stable order, without repeats."""
    out: list[str] = []
    for spec in specs:
        p = Path(spec)
        if spec.startswith(NETWORK_SCHEMES):
            out.append(spec)
        elif p.suffix.lower() in (".txt", ".list") and p.is_file():
            lines = [ln.strip() for ln in p.read_text(errors="replace").splitlines()]
            out += expand_inputs([ln for ln in lines if ln and not ln.startswith("#")])
        elif p.is_dir():
            videos = sorted(str(f) for f in p.rglob("*") if f.suffix.lower() in VIDEO_EXTS and PARTIAL not in f.parts)
            images = any(f.suffix.lower() in IMAGE_EXTS for f in p.iterdir())
            out += videos if videos or not images else [str(p)]
        elif any(ch in spec for ch in "*?["):
            matches = sorted(glob.glob(spec, recursive=True))
            if not matches:
                raise ExtractError(f"{spec!r} matches no file; check the pattern (quote it so the shell does not expand it)")
            out += expand_inputs(matches)
        else:
            out.append(spec)     # a missing or bad file is reported as that input's error, not here
    return list(dict.fromkeys(out))


def plan(inputs: list[str], out_dir: Path, fmt: str) -> list[Job]:
    """One output per input, named after it (stem; parent folder added where two stems collide)."""
    ext = FORMAT_EXT[fmt]
    stems = [Path(i.rstrip("/")).stem or "stream" for i in inputs]
    jobs, used = [], set()
    for inp, stem in zip(inputs, stems):
        name = stem if stems.count(stem) == 1 else f"{Path(inp).parent.name}_{stem}"
        base, n = name, 2
        while name in used:
            name, n = f"{base}-{n}", n + 1
        used.add(name)
        jobs.append(Job(inp, str(out_dir / f"{name}{ext}")))
    return jobs


class Extractor:
    """One worker: a FaceTracker loaded once, then any number of inputs."""

    def __init__(self, settings: TrackSettings, fmt: str, landmarker=None):
        from hihtrack import FaceTracker
        self.settings = replace(settings, record=None, record_video=None, send=[], realtime=False, max_frames=0)
        self.fmt = fmt
        self.tracker = FaceTracker(self.settings, landmarker=landmarker)

    def __call__(self, job: Job, progress: Callable[[int], None] | None = None,
                 stop: threading.Event | None = None) -> Result:
        """`stop` (set from another thread) ends the input early as an interruption: nothing is published."""
        from stream.outputs import open_recorder
        final = Path(job.output)
        if final.exists():
            return Result(job.input, job.output, skipped=True)
        partial = final.parent / PARTIAL / final.name
        t0 = time.perf_counter()
        try:
            source = self.tracker.open_source(job.input)
            if source.live:
                source.close()
                raise ExtractError(f"{job.input} is a live stream; extract takes files (record a stream with `track --record`)")
            partial.parent.mkdir(parents=True, exist_ok=True)
            recorder = open_recorder(replace(self.settings, overwrite=True), self.tracker.landmarker, source, partial)
            recorder.meta.source = job.input
            def on_frame(_frame) -> bool:
                if progress:
                    progress(1)
                return stop is None or not stop.is_set()
            summary = self.tracker.run(source, [recorder], on_frame=on_frame)
            if summary.interrupted or (stop is not None and stop.is_set()):
                raise KeyboardInterrupt
            if summary.error:
                raise ExtractError(summary.error)
            if summary.frames == 0:
                raise ExtractError(f"{job.input} gave no frames")
            _publish(partial, final)
            return Result(job.input, job.output, summary.frames, summary.frames_with_face, time.perf_counter() - t0)
        except UserError as e:
            _discard(partial)
            return Result(job.input, job.output, seconds=time.perf_counter() - t0, error=str(e))

    def close(self) -> None:
        self.tracker.close()


def _publish(partial: Path, final: Path) -> None:
    """Sidecar first, data last: a data file under its final name means the whole output is there."""
    meta = Path(str(partial) + ".meta.json")
    os.replace(meta, Path(str(final) + ".meta.json"))
    os.replace(partial, final)


def _discard(partial: Path) -> None:
    for p in (partial, Path(str(partial) + ".meta.json")):
        p.unlink(missing_ok=True)


# ---- worker processes --------------------------------------------------------------------------
_WORKER: Extractor | None = None
_PROGRESS = None


def _init_worker(settings: dict, fmt: str, progress_queue) -> None:
    global _WORKER, _PROGRESS
    _WORKER, _PROGRESS = Extractor(from_mapping(TrackSettings, settings), fmt), progress_queue


def _run_in_worker(job: Job) -> Result:
    done = [0]

    def tick(n: int) -> None:   # frames reported in batches: a queue message per frame would cost more than it tells
        done[0] += n
        if done[0] >= 25:
            _PROGRESS.put(done[0])
            done[0] = 0
    result = _WORKER(job, tick)
    if done[0]:
        _PROGRESS.put(done[0])
    return result


def run_local(jobs: list[Job], settings: TrackSettings, fmt: str, workers: int, on_frames, on_result) -> list[Result]:
    if workers <= 1:
        ex = Extractor(settings, fmt)
        try:
            return [on_result(ex(job, on_frames)) for job in jobs]
        finally:
            ex.close()
    import multiprocessing as mp
    ctx = mp.get_context("spawn")          # a fork after torch/onnxruntime/mediapipe threads can deadlock
    per_worker = replace(settings, threads=1)     # processes, not threads, use the cores
    results = []
    with ctx.Manager() as manager:
        progress = manager.Queue()
        stop = threading.Event()

        def pump() -> None:
            while not stop.is_set():
                try:
                    on_frames(progress.get(timeout=0.2))
                except queue.Empty:
                    continue
        pumper = threading.Thread(target=pump, daemon=True)
        pumper.start()
        try:
            with ProcessPoolExecutor(min(workers, len(jobs)) or 1, ctx, initializer=_init_worker,
                                     initargs=(asdict(per_worker), fmt, progress)) as pool:
                for fut in as_completed([pool.submit(_run_in_worker, job) for job in jobs]):
                    results.append(on_result(fut.result()))
        finally:
            stop.set()
            pumper.join()
    return results


def run_batched(jobs: list[Job], settings: TrackSettings, fmt: str, videos: int, on_frames, on_result) -> list[Result]:
    """One process and one network for `videos` inputs at once: each input has its own thread, tracker,
    filters and file, and their faces are served together as network batches (BatchingLandmarker),
    with the crops made on the GPU when there is one. The GPU path; on a CPU, worker processes win."""
    from hihtrack.tracker import build_landmarker
    from models.landmarkers import BatchingLandmarker
    if settings.landmarker != "hih":
        raise ExtractError("--batch-videos batches the hih network; use --workers with another landmarker")
    batcher = BatchingLandmarker(build_landmarker(settings, shared=False), max_faces=max(16, 8 * videos))
    pending: queue.Queue[Job] = queue.Queue()
    for job in jobs:
        pending.put(job)
    results: list[Result] = []
    lock, stop = threading.Lock(), threading.Event()

    def worker() -> None:
        ex = Extractor(settings, fmt, landmarker=batcher)
        try:
            while not stop.is_set():
                try:
                    job = pending.get_nowait()
                except queue.Empty:
                    return
                result = ex(job, on_frames, stop)
                with lock:
                    results.append(on_result(result))
        except KeyboardInterrupt:     # stop was set: the main thread is ending the run
            return
        finally:
            ex.close()

    threads = [threading.Thread(target=worker, name=f"extract-{i}") for i in range(max(1, min(videos, len(jobs))))]
    for t in threads:
        t.start()
    try:
        for t in threads:
            t.join()
    except KeyboardInterrupt:
        stop.set()
        for t in threads:
            t.join()
        raise
    finally:
        batcher.close()
    return results


# ---- Ray -----------------------------------------------------------------------------------------
def run_ray(jobs: list[Job], settings: TrackSettings, fmt: str, address: str, on_result) -> list[Result]:
    """Each input a task on a pool of actors (one per CPU of the cluster, each loading the model once)."""
    try:
        import ray
        from ray.util import ActorPool
    except ImportError:
        raise ExtractError("--ray needs the ray package: pip install -r requirements.txt") from None
    try:
        # the package travels with the job (Ray's runtime_env): nodes need no checkout at the same path
        import bench  # the packages a worker imports
        import hihtrack
        import models
        import stream
        import ui
        ray.init(address=None if address == "local" else address, ignore_reinit_error=True, log_to_driver=False,
                 include_dashboard=False, runtime_env={"py_modules": [hihtrack, models, stream, ui, bench]})
    except ConnectionError as e:
        raise ExtractError(f"no Ray cluster at {address!r} ({str(e).splitlines()[0][:120]}); start one with "
                           "`ray start --head`, or pass --ray local for a one-machine cluster") from None

    @ray.remote(num_cpus=1)
    class RayWorker:
        def __init__(self, settings_dict: dict, fmt: str):
            from hihtrack.extract import Extractor
            from models.schema import from_mapping
            from stream.settings import TrackSettings
            self.ex = Extractor(from_mapping(TrackSettings, settings_dict), fmt)

        def run(self, job: dict) -> dict:     # plain dicts over the wire: no repo classes to unpickle
            from hihtrack.extract import Job
            return asdict(self.ex(Job(**job)))

    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    n = min(cpus, len(jobs))
    pool = ActorPool([RayWorker.remote(asdict(replace(settings, threads=1)), fmt) for _ in range(n)])
    results = []
    try:
        for result in pool.map_unordered(lambda actor, job: actor.run.remote(asdict(job)), jobs):
            results.append(on_result(Result(**result)))
    finally:
        ray.shutdown()
    return results


def frame_estimate(spec: str) -> int:
    """Frames an input will give, from its header (0 when unknown): for the progress bar's ETA."""
    p = Path(spec)
    try:
        if p.is_dir():
            return sum(1 for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTS)
        import av
        with av.open(spec) as c:
            return int(c.streams.video[0].frames or 0) if c.streams.video else 0
    except Exception:  # noqa: BLE001 - an unreadable input is reported when it runs
        return 0
