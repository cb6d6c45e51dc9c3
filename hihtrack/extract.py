"""Landmarks for a whole collection: one recording per input, resumable, in parallel or on Ray.

    hihtrack extract videos/ more/*.mp4 list.txt --out landmarks/ [--format csv|jsonl|npz]
                     [--workers N | --batch-videos N | --ray auto|ADDRESS]

    from hihtrack import extract_all
    report = extract_all(["videos/"], "landmarks/", smoothing="shape")    # what the command runs

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
        import hihtrack  # the packages a worker imports
        import models
        import stream
        ray.init(address=None if address == "local" else address, ignore_reinit_error=True, log_to_driver=False,
                 include_dashboard=False, runtime_env={"py_modules": [hihtrack, models, stream]})
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


@dataclass
class ExtractReport:
    """What one extract run did: every planned job, the results of those it ran, the wall time."""
    jobs: list[Job]
    results: list[Result]
    wall_s: float

    @property
    def failed(self) -> list[Result]:
        return [r for r in self.results if r.error]

    @property
    def skipped(self) -> list[Job]:
        ran = {r.input for r in self.results}
        return [j for j in self.jobs if j.input not in ran]

    @property
    def frames(self) -> int:
        return sum(r.frames for r in self.results)


def auto_batch_videos(settings: TrackSettings) -> int:
    """Cross-video batching where it pays: the hih network on a GPU (32 inputs at once); 0 on a CPU,
    where one worker process per core is faster."""
    from models.engine import resolve_device
    return 32 if settings.landmarker == "hih" and resolve_device(settings.device).startswith("cuda") else 0


def extract_all(inputs: Iterable[str], out_dir: str | Path, settings: TrackSettings | None = None, *, fmt: str = "csv",
            workers: int = 0, batch_videos: int = -1, ray: str | None = None,
            on_plan: Callable[[list[Job], list[Job]], None] | None = None, on_frames: Callable[[int], None] | None = None,
            on_result: Callable[[Result], Result] | None = None, notify: Callable[[str], None] | None = None,
            **overrides) -> ExtractReport:
    """One recording per input in `out_dir`, skipping the finished ones (a rerun resumes).

    inputs: files, folders, quoted globs, URLs, list files. `settings` (or keyword settings as for
    FaceTracker). Engines: `ray` (an address, "auto" or "local"), else `batch_videos` inputs at once in
    one process (-1: 32 on a GPU, off on a CPU), else `workers` processes (0: one per core).
    Callbacks: on_plan(all jobs, jobs to run) once, on_frames(n) as frames are done, on_result(result)
    per input, notify(message) for what the run decided."""
    from stream.settings import describe_choices, load_settings, resolve_auto
    if fmt not in FORMAT_EXT:
        raise ExtractError(f"format {fmt!r} is not one of {', '.join(FORMAT_EXT)}")
    settings = settings or load_settings(**overrides)
    if not ray:     # on a cluster each worker chooses for the node it runs on (its FaceTracker does)
        settings, choices = resolve_auto(settings)
        if choices and notify:
            notify(describe_choices(choices))
    expanded = expand_inputs(inputs)
    if not expanded:
        raise ExtractError("no inputs found; give video files, folders, globs or a list file")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / ".write-test").touch()
        (out / ".write-test").unlink()
    except OSError as e:
        raise ExtractError(f"cannot write to --out {out} ({e.strerror}); choose a folder you can write to") from None
    jobs = plan(expanded, out, fmt)
    todo = [j for j in jobs if not Path(j.output).exists()]
    if on_plan:
        on_plan(jobs, todo)
    on_frames, on_result = on_frames or (lambda n: None), on_result or (lambda r: r)
    t0 = time.perf_counter()
    try:
        batch_videos = batch_videos if batch_videos >= 0 else auto_batch_videos(settings)
        if ray:
            results = run_ray(todo, settings, fmt, ray, on_result)
        elif batch_videos:
            if notify:
                notify(f"{batch_videos} inputs at a time, their faces batched through one network")
            results = run_batched(todo, settings, fmt, batch_videos, on_frames, on_result)
        else:
            results = run_local(todo, settings, fmt, workers or max(1, os.cpu_count() or 1), on_frames, on_result)
    finally:
        partial = out / PARTIAL
        if partial.is_dir() and not any(partial.iterdir()):
            partial.rmdir()
    return ExtractReport(jobs, results, time.perf_counter() - t0)


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
