"""Face profiling: large-pose training faces made from near-frontal annotated ones (300W-LP's method on
MediaPipe's face mesh; ../shared/docs/pose-synthesis.md).

For one pre-cropped face:
1. `fit_surface`: MediaPipe Face Mesh (static image, refined) gives 478 vertices in crop px with a
   relative depth; its tessellation edges become triangles, and the eye and mouth holes are closed by
   fans, so the surface covers the whole face.
2. `lift_points`: every annotated point gets a depth from the triangle under it (points outside the
   mesh, mostly on the jaw, take the depth of the nearest face-oval vertex). Moving the 3D point is
   the same as moving its barycentric coordinates with the mesh.
3. `background_anchors`: rings scaled x1.15..1.6 about the face carry hair, ears and background,
   falling back in depth; a ring on the crop border stays put, so every output pixel is covered.
4. `render_view`: the face and its anchors are rotated about the head centre, triangles are drawn
   far to near (painter's order) into a triangle-index image, and one `cv2.remap` pulls every output
   pixel from the source through its triangle's affine map.
5. `march_jaw`: 300-W puts the jaw on the visible silhouette, so jaw points on the side turning
   away are moved along the face's horizontal axis to the boundary of the rendered face mask, then
   spaced evenly along it from the chin (`space_evenly`), as the annotators space them.

Coordinates: x right, y down, z away from the camera, all in crop px (orthographic projection).
Yaw is a rotation about the vertical axis, positive turning the face towards image left (its
right cheek away from the camera); pitch about the horizontal axis.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from models import crop
from models.data import CacheSpec, DataError, Face, precrop

JAW_LEFT_IMAGE = tuple(range(0, 8))     # iBUG jaw points on the image-left half (the subject's right)
JAW_RIGHT_IMAGE = tuple(range(9, 17))
CHIN = 8
IRIS_CENTRES = (468, 473)               # refined Face Mesh: the iris of the eye drawn by iBUG 36-41, then 42-47
# iBUG point -> Face Mesh vertex for 8 points that both annotate the same way: eye and mouth corners,
# nose tip, chin. The fit is kept only when these agree (pose-synthesis.md, recipe step 1).
CHECK_POINTS = {36: 33, 39: 133, 42: 362, 45: 263, 30: 4, 48: 61, 54: 291, 8: 152}
MAX_FIT_NME = 0.08
MAX_SOURCE_YAW_DEG = 40.0


@dataclass
class Surface:
    """A face's 3D surface in crop px."""
    vertices: np.ndarray        # (V,3) x, y px; z px, away from the camera
    triangles: np.ndarray       # (T,3) vertex indices
    oval: np.ndarray            # (O,) vertex indices of the face outline, in order around the face
    centre: np.ndarray          # (3,) rotation centre: the middle of the head, behind the face
    yaw_deg: float              # the source face's own yaw


@dataclass
class View:
    image: np.ndarray           # (S,S,3) uint8 BGR, in the output frame
    landmarks_px: np.ndarray    # (K,2) float32 in the output frame
    extra_px: np.ndarray        # (E,2) float32: other tracked points (pupils) in the output frame
    face_mask: np.ndarray       # (S,S) bool: pixels drawn from the face mesh (its visible silhouette)
    yaw_deg: float
    pitch_deg: float


# --------------------------------------------------------------------------------------------
# Surface
# --------------------------------------------------------------------------------------------

def mesh_triangles(edges: frozenset | set, num_vertices: int) -> np.ndarray:
    """(T,3) triangles of an edge-list tessellation: its 3-cycles, minus the few spurious ones that
    make an edge shared by 3+ triangles (an edge of a surface borders at most two)."""
    nbrs = [set() for _ in range(num_vertices)]
    for a, b in edges:
        nbrs[a].add(b)
        nbrs[b].add(a)
    tris = {tuple(sorted((a, b, c))) for a, b in edges for c in nbrs[a] & nbrs[b]}
    tris = sorted(tris)
    while True:
        use: dict[tuple[int, int], list[int]] = {}
        for t, (a, b, c) in enumerate(tris):
            for e in ((a, b), (a, c), (b, c)):
                use.setdefault(e, []).append(t)
        crowded = [ts for ts in use.values() if len(ts) > 2]
        if not crowded:
            return np.asarray(tris, np.int32)
        # the spurious triangle is the one whose other edges are crowded too
        drop = max(crowded[0], key=lambda t: sum(len(use[e]) for e in _edges(tris[t])))
        tris.pop(drop)


def _edges(t: tuple[int, int, int]) -> list[tuple[int, int]]:
    a, b, c = t
    return [(a, b), (a, c), (b, c)]


def close_holes(triangles: np.ndarray, vertices: np.ndarray, oval: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fan the mesh's inner holes (eyes, mouth) shut: every boundary edge not on the face outline is
    joined to a new vertex at the centre of its hole. -> (vertices, triangles) with the fans appended."""
    count: dict[tuple[int, int], int] = {}
    for t in triangles:
        for e in _edges(tuple(sorted(t))):
            count[e] = count.get(e, 0) + 1
    on_oval = set(oval.tolist())
    inner = [e for e, n in count.items() if n == 1 and not (e[0] in on_oval and e[1] in on_oval)]
    if not inner:
        return vertices, triangles
    # group the boundary edges into loops by connectivity
    parent = {}

    def find(v):
        while parent.setdefault(v, v) != v:
            v = parent[v]
        return v

    for a, b in inner:
        parent[find(a)] = find(b)
    loops: dict[int, list[tuple[int, int]]] = {}
    for e in inner:
        loops.setdefault(find(e[0]), []).append(e)
    verts, tris = [vertices], [triangles]
    for loop in loops.values():
        ids = sorted({v for e in loop for v in e})
        centre = len(vertices) + len(verts) - 1
        verts.append(vertices[ids].mean(0, keepdims=True))
        tris.append(np.asarray([[a, b, centre] for a, b in loop], np.int32))
    return np.concatenate(verts), np.concatenate(tris)


def oval_loop(edges: frozenset | set) -> np.ndarray:
    """The face outline's vertex indices in order along its closed loop."""
    nbrs: dict[int, list[int]] = {}
    for a, b in edges:
        nbrs.setdefault(a, []).append(b)
        nbrs.setdefault(b, []).append(a)
    start = min(nbrs)
    loop, prev = [start], None
    while True:
        nxt = next(n for n in nbrs[loop[-1]] if n != prev)
        if nxt == start:
            return np.asarray(loop)
        prev = loop[-1]
        loop.append(nxt)


def yaw_of(vertices: np.ndarray, oval: np.ndarray) -> float:
    """Yaw in degrees from the outline's widest pair: the cheek that is further back is turned away."""
    pts = vertices[oval]
    left, right = pts[pts[:, 0].argmin()], pts[pts[:, 0].argmax()]
    return math.degrees(math.atan2(right[2] - left[2], right[0] - left[0]))


class MeshFitter:
    """MediaPipe Face Mesh on one pre-cropped face at a time (static images, refined: 478 vertices)."""

    def __init__(self):
        import mediapipe as mp
        fm = mp.solutions.face_mesh
        self._mesh = fm.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=True)
        self._edges = {tuple(sorted(e)) for e in fm.FACEMESH_TESSELATION}
        self.oval = oval_loop({tuple(sorted(e)) for e in fm.FACEMESH_FACE_OVAL})
        self.triangles = mesh_triangles(self._edges, 468)

    def __call__(self, image_bgr: np.ndarray) -> np.ndarray | None:
        """-> (478,3) vertices in image px (z px, away from the camera), or None without a face."""
        res = self._mesh.process(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB))
        if not res.multi_face_landmarks:
            return None
        h, w = image_bgr.shape[:2]
        v = np.asarray([(p.x * w, p.y * h, p.z * w) for p in res.multi_face_landmarks[0].landmark], np.float64)
        return v


def fit_surface(fitter: MeshFitter, image_bgr: np.ndarray, landmarks_px: np.ndarray) -> Surface | str:
    """The face's surface, or a short reason it is not usable as a source."""
    v = fitter(image_bgr)
    if v is None:
        return "no mesh"
    ocular = np.linalg.norm(landmarks_px[36] - landmarks_px[45])
    err = np.mean([np.linalg.norm(v[m, :2] - landmarks_px[i]) for i, m in CHECK_POINTS.items()]) / ocular
    if err > MAX_FIT_NME:
        return f"mesh disagrees with the annotation (NME {err:.3f})"
    yaw = yaw_of(v, fitter.oval)
    if abs(yaw) > MAX_SOURCE_YAW_DEG:
        return f"source yaw {yaw:.0f} deg"
    verts, tris = close_holes(fitter.triangles, v, fitter.oval)   # fan centres appended after the iris
    depth = np.ptp(v[fitter.oval, 0]) * 0.5          # the head's centre lies about half a face width back
    centre = np.array([*v[fitter.oval, :2].mean(0), v[:468, 2].mean() + depth])
    return Surface(verts, tris, fitter.oval, centre, yaw)


def lift_points(surface: Surface, points_px: np.ndarray) -> np.ndarray:
    """(K,2) image points -> (K,3): depth from the front-most triangle under each point, else from the
    nearest outline vertex."""
    v = surface.vertices
    out = np.empty((len(points_px), 3))
    a, b, c = (v[surface.triangles[:, i], :2] for i in range(3))
    for k, p in enumerate(points_px):
        bary = _barycentric(p, a, b, c)
        inside = np.flatnonzero((bary >= -1e-9).all(1))
        if len(inside):
            z = (bary[inside] * v[surface.triangles[inside], 2]).sum(1)
            out[k] = (*p, z.min())
        else:
            nearest = surface.oval[np.linalg.norm(v[surface.oval, :2] - p, axis=1).argmin()]
            out[k] = (*p, v[nearest, 2])
    return out


def _barycentric(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Barycentric coordinates (T,3) of point p in each triangle (a,b,c), each (T,2)."""
    v0, v1, v2 = b - a, c - a, p - a
    den = v0[:, 0] * v1[:, 1] - v1[:, 0] * v0[:, 1]
    den = np.where(np.abs(den) < 1e-12, np.nan, den)
    s = (v2[:, 0] * v1[:, 1] - v1[:, 0] * v2[:, 1]) / den
    t = (v0[:, 0] * v2[:, 1] - v2[:, 0] * v0[:, 1]) / den
    return np.nan_to_num(np.stack([1 - s - t, s, t], 1), nan=-1.0)


# --------------------------------------------------------------------------------------------
# Background anchors
# --------------------------------------------------------------------------------------------

ANCHOR_SCALES = (1.15, 1.3, 1.6)       # rings about the face: hair, ears, neck, near background
ANCHOR_FALLBACK = (0.35, 0.6, 0.8)     # each ring's depth behind the outline, in half face widths
BORDER_POINTS_PER_SIDE = 8


@dataclass
class Anchors:
    points: np.ndarray          # (A,3) px
    moving: np.ndarray          # (A,) bool: rotates with the head (False: the crop border, fixed)
    triangles: np.ndarray       # (T,3) into points; the face-outline vertices come first


def background_anchors(surface: Surface, side_px: int) -> Anchors:
    """The outline, rings scaled about the face centre and the crop border, Delaunay-triangulated,
    minus the triangles inside the outline (the face mesh covers those)."""
    from scipy.spatial import Delaunay

    outline = surface.vertices[surface.oval]
    c2 = outline[:, :2].mean(0)
    half_width = np.ptp(outline[:, 0]) / 2
    rings = [outline]
    for s, back in zip(ANCHOR_SCALES, ANCHOR_FALLBACK):
        ring = outline.copy()
        ring[:, :2] = c2 + (outline[:, :2] - c2) * s
        ring[:, 2] = outline[:, 2] + back * half_width
        rings.append(ring)
    t = np.linspace(0, side_px - 1, BORDER_POINTS_PER_SIDE + 1)[:-1]
    last = side_px - 1
    border2 = np.concatenate([np.stack([t, np.zeros_like(t)], 1), np.stack([np.full_like(t, last), t], 1),
                              np.stack([last - t, np.full_like(t, last)], 1), np.stack([np.zeros_like(t), last - t], 1)])
    border = np.concatenate([border2, np.full((len(border2), 1), rings[-1][:, 2].mean())], 1)
    inner = np.concatenate(rings)
    keep = ((inner[:, :2] > 0) & (inner[:, :2] < last)).all(1)   # ring points off the crop are dropped
    keep[:len(outline)] = True
    pts = np.concatenate([inner[keep], border])
    moving = np.r_[np.ones(keep.sum(), bool), np.zeros(len(border), bool)]
    tri = Delaunay(pts[:, :2]).simplices
    centroids = pts[tri, :2].mean(1)
    inside = cv2.pointPolygonTest
    poly = outline[:, :2].astype(np.float32)
    tri = tri[[inside(poly, (float(x), float(y)), False) < 0 for x, y in centroids]]
    return Anchors(pts, moving, tri.astype(np.int32))


# --------------------------------------------------------------------------------------------
# Rotation and rendering
# --------------------------------------------------------------------------------------------

def rotation(yaw_deg: float, pitch_deg: float) -> np.ndarray:
    """(3,3) yaw about the vertical axis after pitch about the horizontal one."""
    y, p = math.radians(yaw_deg), math.radians(pitch_deg)
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    return ry @ rx


def rotate(points: np.ndarray, r: np.ndarray, centre: np.ndarray) -> np.ndarray:
    return (points - centre) @ r.T + centre


def triangle_affines(src2: np.ndarray, dst2: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """(T,2,3) affine maps from each destination triangle back to its source triangle."""
    d = np.concatenate([dst2[triangles], np.ones((len(triangles), 3, 1))], 2)   # (T,3,3)
    s = src2[triangles]                                                         # (T,3,2)
    det = np.linalg.det(d)
    ok = np.abs(det) > 1e-9
    a = np.zeros((len(triangles), 2, 3))
    a[ok] = np.linalg.solve(d[ok], s[ok]).transpose(0, 2, 1)
    return a


MIN_TRIANGLE_PX2 = 0.25


def render(image: np.ndarray, src2: np.ndarray, dst: np.ndarray, triangles: np.ndarray, out_px: int,
           depth_order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Warp a triangulated image: triangles drawn far to near into an index image, then every pixel
    pulled from the source by its triangle's affine map (one remap, bilinear).

    src2 (V,2) source px; dst (V,2) output px; depth_order: triangle indices, far first.
    -> (out image (out_px,out_px,3), triangle index per pixel (-1 where none))."""
    ids = np.full((out_px, out_px), -1, np.int32)
    pts = np.round(dst * 16).astype(np.int32)       # 4 fractional bits, as cv2's shift argument
    d = dst[triangles]
    area_px2 = 0.5 * np.abs(np.cross(d[:, 1] - d[:, 0], d[:, 2] - d[:, 0]))
    for t in depth_order:
        if area_px2[t] > MIN_TRIANGLE_PX2:      # a triangle seen edge-on has no stable inverse map
            cv2.fillConvexPoly(ids, pts[triangles[t]], int(t), lineType=cv2.LINE_8, shift=4)
    aff = triangle_affines(src2, dst, triangles)
    ys, xs = np.mgrid[0:out_px, 0:out_px].astype(np.float64)
    a = aff[np.maximum(ids, 0)]
    mx = a[..., 0, 0] * xs + a[..., 0, 1] * ys + a[..., 0, 2]
    my = a[..., 1, 0] * xs + a[..., 1, 1] * ys + a[..., 1, 2]
    mx[ids < 0] = -1e4
    out = cv2.remap(image, mx.astype(np.float32), my.astype(np.float32), cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return out, ids


def march_jaw(points2: np.ndarray, jaw: tuple[int, ...], mask: np.ndarray, axis: np.ndarray, step_px: float = 0.25
              ) -> np.ndarray:
    """Move each jaw point along `axis` (unit 2D, pointing out of the face on that side) to the boundary
    of `mask`: out from inside, or in from outside. -> (K,2) copy with the jaw points moved."""
    out = points2.copy()
    h, w = mask.shape
    n = int(max(h, w) / step_px)          # far enough to cross the whole mask

    def inside(p):
        x, y = int(round(p[0])), int(round(p[1]))
        return 0 <= x < w and 0 <= y < h and bool(mask[y, x])

    for k in jaw:
        p = points2[k]
        direction = axis if inside(p) else -axis     # leave the mask, or enter it
        was = inside(p)
        for i in range(1, n):
            q = p + direction * step_px * i
            if inside(q) != was:
                # the boundary lies between the last two samples: take the inside one
                out[k] = q if not was else q - direction * step_px
                break
    return out


def space_evenly(points2: np.ndarray, chain: tuple[int, ...]) -> np.ndarray:
    """Move the inner points of `chain` (indices in order along a contour) to equal arc-length steps
    along the polyline through them; its two ends stay. -> (K,2) copy."""
    out = points2.copy()
    line = points2[list(chain)]
    arc = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(line, axis=0), axis=1))]
    even = np.linspace(0.0, arc[-1], len(chain))
    out[list(chain)] = np.stack([np.interp(even, arc, line[:, 0]), np.interp(even, arc, line[:, 1])], axis=1)
    return out


def far_jaw(points3: np.ndarray) -> tuple[int, ...]:
    """The jaw half turned away from the camera (the deeper one, z away), in order from the chin."""
    left_deeper = points3[list(JAW_LEFT_IMAGE), 2].mean() > points3[list(JAW_RIGHT_IMAGE), 2].mean()
    return JAW_LEFT_IMAGE[::-1] if left_deeper else JAW_RIGHT_IMAGE


@dataclass
class ViewPlan:
    yaw_deg: float          # target yaw of the output face
    pitch_deg: float        # added pitch


def profile_view(image: np.ndarray, surface: Surface, anchors: Anchors, points3: np.ndarray, extra3: np.ndarray,
                 plan: ViewPlan, spec: CacheSpec, march_from_deg: float = 10.0, march_full_deg: float = 30.0) -> View:
    """Render the face turned from its own yaw to plan.yaw_deg (and pitched), re-cropped around its new
    landmarks as the training cache stores faces."""
    r = rotation(plan.yaw_deg - surface.yaw_deg, plan.pitch_deg)
    face = rotate(surface.vertices, r, surface.centre)
    anc = anchors.points.copy()
    anc[anchors.moving] = rotate(anc[anchors.moving], r, surface.centre)
    pts3 = rotate(points3, r, surface.centre)
    ext3 = rotate(extra3, r, surface.centre)

    # the output crop: the cache's square around the new landmarks
    centre, side = crop.square_box(pts3[:, :2], spec.box_scale)
    m = crop.similarity(centre, side, spec.side_px)
    to_out = lambda p: crop.transform_points(m, p[:, :2])   # noqa: E731
    anc_out = to_out(anc)      # the crop-border ring did not move: the background stays where it was
    n_face = len(surface.vertices)
    src2 = np.concatenate([surface.vertices[:, :2], anchors.points[:, :2]])
    dst2 = np.concatenate([to_out(face), anc_out])
    z = np.concatenate([face[:, 2], anc[:, 2]])
    tris = np.concatenate([surface.triangles, anchors.triangles + n_face])
    order = np.argsort(-z[tris].mean(1), kind="stable")        # far first
    out, ids = render(image, src2, dst2, tris, spec.side_px, order)

    lms = to_out(pts3)
    turned = abs(plan.yaw_deg)
    w = float(np.clip((turned - march_from_deg) / (march_full_deg - march_from_deg), 0, 1))
    mask = (ids >= 0) & (ids < len(surface.triangles))
    if w > 0:
        far = far_jaw(pts3)
        eye_axis = lms[45] - lms[36]
        eye_axis /= np.linalg.norm(eye_axis) + 1e-9
        outward = -eye_axis if far == JAW_LEFT_IMAGE[::-1] else eye_axis
        marched = march_jaw(lms, far, mask, outward)
        # 300-W's annotators space the contour points evenly along what is seen of it, from the chin to
        # the ear (on real turned faces too: bench/RESULTS.md, Hard faces); marched straight across,
        # the far side's points bunch towards the chin. Spaced evenly, then put back on the boundary.
        marched = march_jaw(space_evenly(marched, (CHIN, *far)), far, mask, outward)
        lms = (1 - w) * lms + w * marched
    return View(out, lms.astype(np.float32), to_out(ext3).astype(np.float32), mask, plan.yaw_deg, plan.pitch_deg)


def plan_views(source_yaw_deg: float, rng: np.random.Generator, step_deg: float = 15.0, max_deg: float = 75.0,
               pitch_deg: float = 10.0) -> list[ViewPlan]:
    """Yaws away from frontal, in steps up to max_deg, each with a small random pitch; a face within 5 deg
    of frontal is turned both ways (the training flip mirrors the rest)."""
    signs = (1.0, -1.0) if abs(source_yaw_deg) < 5 else (math.copysign(1.0, source_yaw_deg),)
    plans = []
    for sgn in signs:
        for target in np.arange(step_deg * 2, max_deg + 1e-6, step_deg):
            if target >= abs(source_yaw_deg) + step_deg / 2:
                jitter = rng.uniform(-step_deg / 3, step_deg / 3)
                plans.append(ViewPlan(sgn * min(max_deg, target + jitter), float(rng.uniform(-pitch_deg, pitch_deg))))
    return plans


# --------------------------------------------------------------------------------------------
# The synthetic cache (resumable; the training cache format of models.data plus a pose per face)
# --------------------------------------------------------------------------------------------

def synthesize(faces: list[Face], out_dir: Path, spec: CacheSpec, seed: int = 0, log=print) -> dict:
    """Profile every face into out_dir: per source face, its views as JPEGs and one JSON of labels.
    Faces already done are skipped, so an interrupted run goes on where it stopped; at the end the
    cache files (landmarks.npy, meta.json) are assembled. -> counts."""
    out_dir.mkdir(parents=True, exist_ok=True)
    fitter = MeshFitter()
    for i, face in enumerate(faces):
        label_path = out_dir / f"{i:05d}.json"
        if label_path.exists():
            continue
        image, pts = precrop(face, spec)
        surface = fit_surface(fitter, image, pts)
        record: dict = {"source": str(face.image_path), "subset": face.subset, "views": []}
        if isinstance(surface, str):
            record["skipped"] = surface
        else:
            rng = np.random.default_rng([seed, i])
            anchors = background_anchors(surface, spec.side_px)
            points3 = lift_points(surface, pts)
            iris3 = surface.vertices[list(IRIS_CENTRES)]
            record["source_yaw_deg"] = surface.yaw_deg
            record["source_pupils_px"] = iris3[:, :2].tolist()
            for v, plan in enumerate(plan_views(surface.yaw_deg, rng)):
                view = profile_view(image, surface, anchors, points3, iris3, plan, spec)
                name = f"{i:05d}_{v}.jpg"
                cv2.imwrite(str(out_dir / name), view.image, [cv2.IMWRITE_JPEG_QUALITY, 93])
                record["views"].append({"image": name, "landmarks_px": view.landmarks_px.tolist(),
                                        "pupils_px": view.extra_px.tolist(), "yaw_deg": view.yaw_deg,
                                        "pitch_deg": view.pitch_deg})
        label_path.write_text(json.dumps(record))
        if (i + 1) % 50 == 0:
            log(f"profiled {i + 1}/{len(faces)} faces")
    return assemble(out_dir, spec, len(faces))


def assemble(out_dir: Path, spec: CacheSpec, count: int) -> dict:
    """Gather the per-face labels into the cache files models.data.load_cache reads."""
    files, sources, lms, pupils, yaws, subsets, skipped = [], [], [], [], [], [], 0
    for i in range(count):
        rec = json.loads((out_dir / f"{i:05d}.json").read_text())
        skipped += "skipped" in rec
        for v in rec["views"]:
            files.append(v["image"])
            sources.append(i)
            lms.append(v["landmarks_px"])
            pupils.append(v["pupils_px"])
            yaws.append(v["yaw_deg"])
            subsets.append(rec["subset"])
    if not files:
        raise DataError(f"no face in {out_dir} could be profiled; see the 'skipped' reasons in its JSON files")
    np.save(out_dir / "landmarks.npy", np.asarray(lms, np.float32))
    np.save(out_dir / "pupils.npy", np.asarray(pupils, np.float32))
    meta = {"side_px": spec.side_px, "box_scale": spec.box_scale, "count": len(files), "files": files,
            "source_index": sources, "subsets": subsets, "yaw_deg": yaws, "source_faces": count, "skipped_faces": skipped}
    (out_dir / "meta.json").write_text(json.dumps(meta))
    return {"views": len(files), "source_faces": count, "skipped_faces": skipped}


def contact_sheet(cache_dir: Path, out_png: Path, count: int = 48, columns: int = 8, tile_px: int = 160,
                  seed: int = 0) -> None:
    """A grid of random synthetic crops with their landmarks (jaw in red) and yaw, for a person to
    check before training."""
    meta = json.loads((cache_dir / "meta.json").read_text())
    lms = np.load(cache_dir / "landmarks.npy")
    pick = np.random.default_rng(seed).choice(meta["count"], min(count, meta["count"]), replace=False)
    tiles = []
    for j in pick:
        img = cv2.imread(str(cache_dir / meta["files"][j]))
        s = tile_px / img.shape[0]
        img = cv2.resize(img, (tile_px, tile_px), interpolation=cv2.INTER_AREA)
        for k, (x, y) in enumerate(lms[j] * s):
            cv2.circle(img, (int(round(x)), int(round(y))), 1, (0, 0, 255) if k < 17 else (0, 255, 0), -1)
        cv2.putText(img, f"{meta['yaw_deg'][j]:+.0f}", (3, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
        tiles.append(img)
    while len(tiles) % columns:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.concatenate(tiles[r:r + columns], 1) for r in range(0, len(tiles), columns)]
    cv2.imwrite(str(out_png), np.concatenate(rows, 0))
