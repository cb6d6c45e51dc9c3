"""Photos are not video: a single image works as a source, a folder of unrelated photos gives each
photo its own detection, refinement, id and landmarks, and a folder of video frames keeps tracking."""
import shutil

import cv2
import numpy as np
import pytest

from models.data import load_faces
from models.detector import build_detector
from models.landmarkers import build_landmarker, settle
from models.metrics import nme_per_face
from models.schemes import SCHEMES
from stream.demo import DemoSource
from stream.pipeline import Pipeline, PipelineConfig
from stream.sources import FolderSource, open_source
from stream.tracking import Tracker


@pytest.fixture(scope="module")
def parts():
    lm = build_landmarker("hih")
    yield lm, build_detector("blazeface")
    lm.close()


def _photos(folder):
    import matplotlib.cbook
    import skimage.data
    folder.mkdir(exist_ok=True)
    cv2.imwrite(str(folder / "a_astronaut.png"), skimage.data.astronaut()[:, :, ::-1])
    shutil.copy(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False), folder / "b_grace_hopper.jpg")
    return sorted(folder.iterdir())


def _run(source, parts, smoothing="kalman"):
    lm, det = parts
    with Pipeline(source, Tracker(det), lm, PipelineConfig(smoothing=smoothing)) as pipe:
        return list(pipe.results())


def test_unrelated_photos_do_not_inherit_each_others_face(tmp_path, parts):
    paths = _photos(tmp_path / "photos")
    folder = open_source(str(tmp_path / "photos"))
    assert folder.stills and "stills" in folder.description
    together = _run(folder, parts)
    alone = [_run(open_source(str(p)), parts)[0] for p in paths]
    assert [len(f.faces) for f in together] == [1, 1]
    ids = [f.faces[0].track_id for f in together]
    assert len(set(ids)) == 2                                   # Grace Hopper is not the astronaut
    for a, b in zip(together, alone):
        # the same landmarks whether the photo comes alone or after another one: nothing carried over
        assert np.abs(a.faces[0].landmarks_px - b.faces[0].landmarks_px).max() < 1e-3
        assert np.array_equal(a.faces[0].smoothed_px, a.faces[0].landmarks_px)   # no blending across photos
        pts = a.faces[0].landmarks_px
        assert pts[36:48, 1].mean() < pts[48:68, 1].mean() < pts[8, 1]            # eyes above mouth above chin


def test_folder_of_300w_photos_each_gets_its_own_correct_landmarks(tmp_path, parts, data_300w):
    faces = [f for f in load_faces(data_300w, "test")[::37]][:12]
    folder = tmp_path / "faces"
    folder.mkdir()
    for i, f in enumerate(faces):
        shutil.copy(f.image_path, folder / f"{i:02d}{f.image_path.suffix}")
    frames = _run(FolderSource(str(folder)), parts, smoothing="shape")
    assert len(frames) == len(faces)
    nmes, ids = [], []
    for frame, face in zip(frames, faces):
        gt_centre = face.landmarks_px.mean(0)
        best = min(frame.faces, key=lambda f: np.linalg.norm(f.landmarks_px.mean(0) - gt_centre))
        nmes.append(nme_per_face(best.smoothed_px[None], face.landmarks_px[None], SCHEMES[68].ocular)[0] * 100)
        ids += [f.track_id for f in frame.faces]
    assert len(set(ids)) == len(ids)
    assert max(nmes) < 10 and np.mean(nmes) < 5, nmes


def test_folder_of_video_frames_keeps_tracking(tmp_path, parts):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, (img, _) in enumerate(DemoSource(frames=12).frames()):
        cv2.imwrite(str(folder / f"frame_{i:04d}.png"), img)
    source = FolderSource(str(folder))
    assert not source.stills and "video frames" in source.description
    frames = _run(source, parts)
    assert {f.faces[0].track_id for f in frames} == {0}
    assert FolderSource(str(folder), mode="stills").stills


def test_refinement_brings_detector_boxes_to_the_landmark_crop(parts, data_300w):
    """The detector box, refined from the landmarks, gives lower error than the box alone."""
    lm, det = parts
    raw, refined = [], []
    for face in load_faces(data_300w, "test")[5::60]:
        image = cv2.imread(str(face.image_path))
        boxes = det(image)
        if not boxes:
            continue
        box = min(boxes, key=lambda b: np.linalg.norm(b.center_px - face.landmarks_px.mean(0)))
        first = lm(image, [box])
        for out, res in ((raw, first), (refined, settle(lm, image, first))):
            out.append(nme_per_face(res[0].landmarks_px[None], face.landmarks_px[None], SCHEMES[68].ocular)[0])
    assert len(raw) >= 8
    assert np.mean(refined) < np.mean(raw), (np.mean(raw), np.mean(refined))


def test_tiles_find_small_faces_but_not_the_features_of_a_big_one():
    """find_faces: a face only a tile finds is added; a tile's box mostly inside a whole-image face and
    under half its size (an eye or a mouth seen larger) is not; a neighbour's face half inside a wide
    box is; a face cut by a tile's inner edge is left to the tile that sees it whole."""
    from models.detector import FaceBox, find_faces

    image = np.zeros((600, 900, 3), np.uint8)
    big = FaceBox(np.array([450.0, 300.0]), 240.0, 0.9)
    small_far = np.array([800.0, 80.0])           # a small face in a corner, seen only by a tile
    feature = np.array([420.0, 260.0])            # an eye of the big face
    neighbour = np.array([555.0, 300.0])          # a face 60 % inside the big box, 0.6 of its size

    def detector(img):
        if img.shape[:2] == image.shape[:2]:
            return [big]
        h, w = img.shape[:2]
        y0, x0 = _offset(image, img)
        found = []
        for c, side in ((small_far, 40.0), (feature, 50.0), (neighbour, 140.0)):
            local = c - [x0, y0]
            if side / 2 <= local[0] <= w - side / 2 and side / 2 <= local[1] <= h - side / 2:
                found.append(FaceBox(local, side, 0.8))
        return found

    boxes = find_faces(detector, image, 3)
    centres = [tuple(np.round(b.center_px)) for b in boxes]
    assert centres[0] == (450.0, 300.0)
    assert (800.0, 80.0) in centres and (555.0, 300.0) in centres
    assert (420.0, 260.0) not in centres


def _offset(image: np.ndarray, tile: np.ndarray) -> tuple[int, int]:
    """Where a tile (a view into `image`) starts in it."""
    start = tile.__array_interface__["data"][0] - image.__array_interface__["data"][0]
    row = image.strides[0]
    return start // row, (start % row) // image.strides[1]
