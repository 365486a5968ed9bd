"""IoU tracker: keeps face ids stable across frames and smooths boxes so crops do not jitter.

Each track has a constant-velocity estimate, so between detections (`--detect-every N`) its box moves
with the face, and fast-moving faces still overlap their prediction when the next detection arrives.
Detections left over by IoU matching get a second chance by centre distance (similar size, at most
TRACK_MAX_JUMP box sizes away). Box and velocity are smoothed with exponential moving averages (EMA).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from .constants import (TRACK_EMA_ALPHA, TRACK_IOU_MATCH, TRACK_MAX_JUMP, TRACK_MAX_MISSES, TRACK_SIZE_RATIO,
                        TRACK_VELOCITY_ALPHA)
from .detect import Box, Detection, box_centre, box_size


@dataclass(frozen=True)
class Track:
    """A face followed over time.

    box: smoothed (x, y, w, h) at frame `frame`; velocity: (dx, dy) pixels per frame;
    misses: detection rounds in a row without a matching detection; score_sum: detector scores of its hits.
    track_id is 0 while the track is tentative; it gets an id when it is confirmed (see IoUTracker), so a
    flickering non-face never consumes ids or reaches the views, crops and events.
    """

    track_id: int
    box: Box
    score: float
    frame: int
    velocity: tuple[float, float] = (0.0, 0.0)
    hits: int = 1
    misses: int = 0
    score_sum: float = 0.0

    @property
    def confirmed(self) -> bool:
        return self.track_id > 0

    @property
    def mean_score(self) -> float:
        return self.score_sum / self.hits if self.hits else 0.0

    def box_at(self, frame: int) -> Box:
        """The box predicted for `frame` (moved by the velocity)."""
        steps = frame - self.frame
        x, y, w, h = self.box
        return (x + self.velocity[0] * steps, y + self.velocity[1] * steps, w, h)


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def match_greedy(track_boxes: list[Box], detection_boxes: list[Box], threshold: float) -> list[tuple[int, int]]:
    """(track index, detection index) pairs, best IoU first, each used once, IoU >= threshold."""
    candidates = sorted(((iou(t, d), ti, di) for ti, t in enumerate(track_boxes)
                         for di, d in enumerate(detection_boxes)), reverse=True)
    used_tracks, used_detections, pairs = set(), set(), []
    for overlap, ti, di in candidates:
        if overlap < threshold:
            break
        if ti not in used_tracks and di not in used_detections:
            used_tracks.add(ti)
            used_detections.add(di)
            pairs.append((ti, di))
    return pairs


def centre_jump(a: Box, b: Box) -> float | None:
    """Centre distance in units of the larger box size; None if the sizes differ by more than
    TRACK_SIZE_RATIO (then they are not the same face)."""
    size_a, size_b = box_size(a), box_size(b)
    if min(size_a, size_b) <= 0 or max(size_a, size_b) / min(size_a, size_b) > TRACK_SIZE_RATIO:
        return None
    (ax, ay), (bx, by) = box_centre(a), box_centre(b)
    return ((ax - bx) ** 2 + (ay - by) ** 2) ** 0.5 / max(size_a, size_b)


def match_by_jump(track_boxes: list[Box], detection_boxes: list[Box], max_jump: float,
                  pairs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Second pass for what IoU left unmatched (fast faces, new tracks without a velocity yet):
    nearest centres first, at most `max_jump` box sizes apart. Returns `pairs` extended."""
    used_tracks, used_detections = {t for t, _ in pairs}, {d for _, d in pairs}
    candidates = []
    for ti, t in enumerate(track_boxes):
        for di, d in enumerate(detection_boxes):
            jump = None if ti in used_tracks or di in used_detections else centre_jump(t, d)
            if jump is not None and jump <= max_jump:
                candidates.append((jump, ti, di))
    result = list(pairs)
    for _, ti, di in sorted(candidates):
        if ti not in used_tracks and di not in used_detections:
            used_tracks.add(ti)
            used_detections.add(di)
            result.append((ti, di))
    return result


def smooth(previous: tuple[float, ...], new: tuple[float, ...], alpha: float) -> tuple[float, ...]:
    """Exponential moving average: alpha * new + (1 - alpha) * previous, element-wise."""
    return tuple(alpha * n + (1.0 - alpha) * p for p, n in zip(previous, new))


class IoUTracker:
    """Greedy IoU matching of detections to predicted track boxes; new ids for unmatched detections.

    Args:
        iou_match: minimum IoU between a detection and a track's predicted box to continue the track.
        alpha: EMA weight of a new detection's box against the prediction.
        velocity_alpha: EMA weight of a newly measured velocity.
        max_misses: detection rounds a track survives unmatched before it is dropped.
        max_jump: second-pass matching by centre distance, in box sizes (see `match_by_jump`).
        confirm_hits, confirm_score: a track is confirmed (gets its id) once it has been detected this many
            times with at least this mean detector score. 1 and 0: every detection is a face at once (stills).
    """

    def __init__(self, iou_match: float = TRACK_IOU_MATCH, alpha: float = TRACK_EMA_ALPHA,
                 velocity_alpha: float = TRACK_VELOCITY_ALPHA, max_misses: int = TRACK_MAX_MISSES,
                 max_jump: float = TRACK_MAX_JUMP, confirm_hits: int = 1, confirm_score: float = 0.0,
                 next_id: int = 1):
        self.iou_match = iou_match
        self.alpha = alpha
        self.velocity_alpha = velocity_alpha
        self.max_misses = max_misses
        self.max_jump = max_jump
        self.confirm_hits = confirm_hits
        self.confirm_score = confirm_score
        self.tracks: list[Track] = []
        self.next_id = next_id

    def update(self, detections: list[Detection], frame: int) -> list[Track]:
        """Feed the detections of `frame`; returns the live tracks, boxes at `frame`."""
        predicted = [t.box_at(frame) for t in self.tracks]
        boxes = [d.box for d in detections]
        matched = dict(match_by_jump(predicted, boxes, self.max_jump, match_greedy(predicted, boxes, self.iou_match)))
        kept = []
        for index, track in enumerate(self.tracks):
            if index in matched:
                kept.append(self._continued(track, predicted[index], detections[matched[index]], frame))
            elif track.misses < self.max_misses:
                kept.append(replace(track, misses=track.misses + 1))
        used = set(matched.values())
        for index, detection in enumerate(detections):
            if index not in used:
                kept.append(self._confirm(Track(0, detection.box, detection.score, frame, score_sum=detection.score)))
        self.tracks = kept
        return self.tracks_at(frame)

    def _confirm(self, track: Track) -> Track:
        """Give a tentative track its id once it has enough hits with a high enough mean score."""
        if track.confirmed or track.hits < self.confirm_hits or track.mean_score < self.confirm_score:
            return track
        self.next_id += 1
        return replace(track, track_id=self.next_id - 1)

    def _continued(self, track: Track, predicted: Box, detection: Detection, frame: int) -> Track:
        steps = max(1, frame - track.frame)
        (cx, cy), (px, py) = box_centre(detection.box), box_centre(track.box)
        measured = ((cx - px) / steps, (cy - py) / steps)
        velocity = measured if track.hits == 1 else smooth(track.velocity, measured, self.velocity_alpha)
        return self._confirm(replace(track, box=smooth(predicted, detection.box, self.alpha), score=detection.score,
                                     frame=frame, velocity=velocity, hits=track.hits + 1, misses=0,
                                     score_sum=track.score_sum + detection.score))

    def tracks_at(self, frame: int) -> list[Track]:
        """The live tracks with their boxes predicted for `frame` (the tracker itself is unchanged)."""
        return [replace(t, box=t.box_at(frame), frame=frame) for t in self.tracks]
