"""Face detection with YuNet (`cv2.FaceDetectorYN`), run on a downscaled copy of large frames."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .constants import (
    DETECT_MAX_SIDE, DETECT_MAX_UPSCALE, DETECT_MIN_FACE_PX, DETECT_NMS_THRESHOLD, DETECT_REFINE_BELOW_PX,
    DETECT_REFINE_FACE_PX, DETECT_REFINE_WINDOW, DETECT_SCORE_THRESHOLD, DETECT_TOP_K, STILL_SECOND_LOOK_FACE_PX,
)
from .errors import AssetError
from .frames import resample_square

log = logging.getLogger(__name__)

Box = tuple[float, float, float, float]  # x, y, w, h in frame pixels


def scale_box(box: Box, factor: float) -> Box:
    """A box in the pixels of the same frame resized by `factor`."""
    return tuple(v * factor for v in box)


def box_size(box: Box) -> float:
    """Face size used for framing, filtering and tracking: geometric mean of the box sides."""
    return float(np.sqrt(max(box[2], 0.0) * max(box[3], 0.0)))


@dataclass(frozen=True)
class Detection:
    """One face: box (x, y, w, h), detector score, and YuNet's 5 points (eyes, nose, mouth corners)."""

    box: Box
    score: float
    landmarks: tuple[tuple[float, float], ...] = ()


def detection_scale(width: int, height: int, max_side: int, min_face_px: float | None = None) -> float:
    """The factor the frame is resized by before detection.

    Brings the longest side down to `max_side` (the detection budget). With `min_face_px` below YuNet's
    reliable size (DETECT_MIN_FACE_PX) a frame that fits the budget is upscaled so that such a face reaches
    that size (at most DETECT_MAX_UPSCALE, never beyond the budget)."""
    budget = max_side / max(width, height)
    wanted = 1.0 if min_face_px is None else max(1.0, DETECT_MIN_FACE_PX / min_face_px)
    return min(wanted, DETECT_MAX_UPSCALE, budget)


def _to_detections(rows: np.ndarray | None, scale: float) -> list[Detection]:
    if rows is None:
        return []
    detections = []
    for row in rows:
        box = tuple(float(v) / scale for v in row[:4])
        points = tuple((float(row[i]) / scale, float(row[i + 1]) / scale) for i in range(4, 14, 2))
        detections.append(Detection(box=box, score=float(row[14]), landmarks=points))
    return detections


def box_centre(box: Box) -> tuple[float, float]:
    return box[0] + box[2] / 2, box[1] + box[3] / 2


def _centre_distance(a: Box, b: Box) -> float:
    (ax, ay), (bx, by) = box_centre(a), box_centre(b)
    return float(np.hypot(ax - bx, ay - by))


def _same_face(candidate: Box, original: Box) -> bool:
    """A refinement window's detection is the face it was opened for: centre within half the face's size,
    size within a factor of 1.5."""
    size, other = box_size(original), box_size(candidate)
    return _centre_distance(candidate, original) <= 0.5 * size and 1 / 1.5 <= other / max(size, 1e-6) <= 1.5


class FaceDetector:
    """YuNet on frames of any size. The detector input size follows the (scaled) frame size.

    Args:
        model_path: the YuNet ONNX file (see `runtime.assets`).
        max_side: the detection budget: the frame is never detected with a longest side above this.
        min_face_px: the smallest face wanted; sets the detection scale (see `detection_scale`). None: only
            downscale to `max_side`. Boxes are always mapped back to full-frame pixels.
        score_threshold, nms_threshold, top_k: YuNet's own settings.
        min_face_asked: False when `min_face_px` is a default, not the user's: a frame too large to detect faces
            that small is then said at INFO level, not as a warning.
        refine_below_px: faces found smaller than this get their box and points re-measured on an enlarged
            window around them (see constants.DETECT_REFINE_*); 0 turns it off.
    """

    def __init__(self, model_path: str | Path, max_side: int = DETECT_MAX_SIDE,
                 score_threshold: float = DETECT_SCORE_THRESHOLD, nms_threshold: float = DETECT_NMS_THRESHOLD,
                 top_k: int = DETECT_TOP_K, min_face_px: float | None = None, min_face_asked: bool = True,
                 refine_below_px: float = DETECT_REFINE_BELOW_PX):
        self.model_path = Path(model_path)
        self.refine_below_px = refine_below_px
        self.max_side = max_side
        self.min_face_px = min_face_px
        self.min_face_asked = min_face_asked
        self._warned_scale = False
        self._input_size: tuple[int, int] | None = None
        self._window_px = round(DETECT_REFINE_FACE_PX * DETECT_REFINE_WINDOW)
        self._still_px = round(STILL_SECOND_LOOK_FACE_PX * DETECT_REFINE_WINDOW)
        self._settings = (score_threshold, nms_threshold, top_k)
        self._still_net = None  # made on the first second look (stills only)
        try:
            self._net = self._create_net((320, 320))
            # a second net for the refinement windows, so that neither changes input size between calls
            self._window_net = self._create_net((self._window_px,) * 2)
            self._net.detect(np.zeros((320, 320, 3), np.uint8))  # a file that is not YuNet fails here, not mid-run
        except cv2.error as err:
            raise AssetError(
                f"cannot load the face detector {self.model_path}: {err.msg.strip()}. Expected the YuNet "
                "ONNX file face_detection_yunet_2023mar.onnx; fetch a fresh copy with "
                "`python -m runtime.assets fetch` or pass --detector-model PATH."
            ) from err

    def _create_net(self, size: tuple[int, int]):
        return cv2.FaceDetectorYN.create(str(self.model_path), "", size, *self._settings)

    def detect(self, frame: np.ndarray) -> list[Detection]:
        """Faces in a BGR uint8 frame, boxes in the frame's own pixels, best score first."""
        height, width = frame.shape[:2]
        scale = detection_scale(width, height, self.max_side, self.min_face_px)
        self._warn_if_budget_limits(scale)
        image = frame
        if scale != 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            image = cv2.resize(frame, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
            scale = image.shape[1] / width  # the rounded size's exact factor
        self._set_input_size(image.shape[1], image.shape[0])
        _, rows = self._net.detect(image)
        detections = [self._refined(frame, d) if box_size(d.box) < self.refine_below_px else d
                      for d in _to_detections(rows, scale)]
        return sorted(detections, key=lambda d: d.score, reverse=True)

    def _refined(self, frame: np.ndarray, detection: Detection) -> Detection:
        """The detection with box and points measured again on an enlarged window around it (its score is
        kept: gating thresholds are set on first-pass scores). Unchanged when the window finds no match."""
        again = self._look_again(frame, detection, self._window_net, self._window_px)
        if again is None:
            return detection
        return Detection(box=again.box, score=detection.score, landmarks=again.landmarks)

    def second_look_score(self, frame: np.ndarray, detection: Detection) -> float:
        """YuNet's score for the same face on a window around it, enlarged so that the face is
        STILL_SECOND_LOOK_FACE_PX (0.0 when it is not found there): the stills' stand-in for a second frame."""
        if self._still_net is None:
            self._still_net = self._create_net((self._still_px,) * 2)
        again = self._look_again(frame, detection, self._still_net, self._still_px)
        return 0.0 if again is None else again.score

    def _look_again(self, frame: np.ndarray, detection: Detection, net, window_px: int) -> Detection | None:
        """The same face detected on a window DETECT_REFINE_WINDOW x its size, resampled to window_px (frame
        coordinates), or None."""
        x, y, w, h = detection.box
        side = DETECT_REFINE_WINDOW * box_size(detection.box)
        left, top = x + w / 2 - side / 2, y + h / 2 - side / 2
        window = resample_square(frame, left, top, side, (window_px, window_px))
        _, rows = net.detect(window)
        original = (x - left, y - top, w, h)  # in window coordinates, frame pixels
        candidates = [d for d in _to_detections(rows, window_px / side) if _same_face(d.box, original)]
        if not candidates:
            return None
        best = min(candidates, key=lambda d: _centre_distance(d.box, original))
        bx, by, bw, bh = best.box
        return Detection(box=(bx + left, by + top, bw, bh), score=best.score,
                         landmarks=tuple((px + left, py + top) for px, py in best.landmarks))

    def _warn_if_budget_limits(self, scale: float) -> None:
        smallest = DETECT_MIN_FACE_PX / scale
        if self.min_face_px and smallest > self.min_face_px * 1.05 and not self._warned_scale:
            self._warned_scale = True
            log.log(logging.WARNING if self.min_face_asked else logging.INFO,
                    "faces below ~%.0f px are not detected reliably at this frame size (detection budget "
                    "--detect-max-side %d); the models would take faces from %.0f px (--min-face)", smallest,
                    self.max_side, self.min_face_px)

    def _set_input_size(self, width: int, height: int) -> None:
        if self._input_size != (width, height):
            self._net.setInputSize((width, height))
            self._input_size = (width, height)
