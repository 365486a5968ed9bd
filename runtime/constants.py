"""Tuned numbers of the runtime, each with where it comes from. Nothing model-specific lives here:
model input/output sizes come from the artifact's manifest or graph."""

# --- Face detection (YuNet, cv2.FaceDetectorYN) -------------------------------------------------
# Frames whose longest side exceeds this are downscaled before detection. Measured on
# ../shared/data/scenes/street-video-1080p.mp4 (every 8th frame, 14 frames, 101 faces found at full
# resolution, 2-core CPU): 1920 px: 145 ms/frame; 1280 px: 65 ms, misses 3 faces of 24-34 px (and finds
# others); 960 px: 22 ms, misses 6 of 23-42 px. In frame 0 all 9 faces (21-120 px) are found at 1280 px.
DETECT_MAX_SIDE = 1280
# YuNet's reliable face size: recall >= 90 % from 10 px at detection scale 1 (`python -m benchmarks.detection`:
# the shared scene photos and street frame 0 downscaled 1-12x; 10-12 px 0.90, 8-10 px 0.47; detecting on a
# x2 upscaled frame finds 100 % from 8 px, x4 from 4 px). The detection scale makes the smallest wanted face
# this large.
DETECT_MIN_FACE_PX = 10
DETECT_MAX_UPSCALE = 4.0  # small frames are upscaled at most this much before detection
# Box refinement: a face found smaller than DETECT_REFINE_BELOW_PX is detected again on a window around it,
# DETECT_REFINE_WINDOW times its size, enlarged so that the face is DETECT_REFINE_FACE_PX there, and takes
# that box and those points. YuNet's boxes of 10 px faces are loose (the group photos and street frames
# downscaled 8x, against YuNet on the originals: centre sd 0.05 / 0.09 of the size, size sd 0.11); at
# 40 px they are 2-3x tighter, and the x8 models feel the framing (`python -m benchmarks.frames`).
DETECT_REFINE_BELOW_PX = 24
DETECT_REFINE_FACE_PX = 40
DETECT_REFINE_WINDOW = 3.0
# Score threshold: at 0.6 all 9 faces of street-video frame 0 are kept (the 120 px one scores 0.61);
# 0.5 and below add false positives. OpenCV Zoo's demo uses 0.9, which is too strict for small faces.
DETECT_SCORE_THRESHOLD = 0.6
DETECT_NMS_THRESHOLD = 0.3  # OpenCV Zoo default
DETECT_TOP_K = 5000  # OpenCV Zoo default

# --- Live sources -----------------------------------------------------------------------------------
# A camera/stream read that has not returned after this long is treated as a hung driver: the capture is
# abandoned and the source reopened. Longer than any normal frame gap (a 1 fps camera, an RTSP key-frame
# wait) and the 5 s FFmpeg open/read timeout.
READ_WATCHDOG_S = 10.0

# --- Face framing (detector box -> square crop like the training crops) ---------------------------
# Measured by `python -m runtime.measure_framing` on UTKFace crop_part1 (../shared/data/faces-utk,
# the 200x200 training crops): YuNet on each crop padded with a 100 px replicated border (so the detector
# sees the whole face); box size = sqrt(w * h). Test split (500 faces, all detected): crop side / box
# size median 1.025 (p10 0.947, p90 1.116); crop centre - box centre = (+0.005, +0.127) box sizes
# (x right, y down: YuNet's box reaches higher up the forehead than the crops). Val split (200): 1.026,
# (+0.003, +0.128). x is set to 0 (faces are symmetric; 0.005 is within noise, std 0.055).
FRAMING_SCALE = 1.025
FRAMING_OFFSET = (0.0, 0.127)
# Framing squares are placed to 1/this of a frame pixel where the face is not pasted back (gallery,
# side-by-side, crops); the overlay frames them on its own pixel grid (see faces.square_around).
FRAMING_GRID = 8

# --- Tracking (between detections) -----------------------------------------------------------------
TRACK_IOU_MATCH = 0.3  # a detection continues a track when its IoU with the track's predicted box is >= this
TRACK_EMA_ALPHA = 0.5  # box smoothing: new = alpha * detection + (1 - alpha) * prediction
TRACK_VELOCITY_ALPHA = 0.5  # velocity smoothing, same form
TRACK_MAX_MISSES = 2  # detection rounds a track survives without a matching detection
CROP_SCORES_KEPT = 4096  # best-crop scores remembered (most recently improved tracks): fixed memory
CROP_FILES_KEPT = 10_000  # --save-crops keeps the crops of this many most recent tracks (a 24/7 camera: ~0.3 GB)
# Second-pass matching by centre distance, for what IoU missed. In street-video-1080p.mp4 faces of ~95 px
# cross the frame at ~40 px/frame, i.e. ~1.3 box sizes between detections with --detect-every 3; a
# new track has no velocity yet, so its prediction cannot follow. 1.5 sizes keeps those ids.
TRACK_MAX_JUMP = 1.5
TRACK_SIZE_RATIO = 1.5  # ... and only between boxes whose sizes differ by at most this factor
# Face gating for videos and cameras: a track becomes a face (gets an id, is enhanced, gets a crop and events)
# after this many detections with at least this mean YuNet score. Measured by `python -m benchmarks.gating`
# against hand labels of five street-video frames (tests/data/street_faces.json: 36 faces, 29 non-faces),
# detect every frame: without gating 2 confirmed non-face tracks (a crest figure, the back of a bald head)
# and 32 ids; 3 hits / mean 0.72: none and 14 ids, 92.9 % of the labelled faces after the first two frames
# (a mean of 0.75 loses a side-on face: 89.3 %). YuNet's per-detection score and its five points cannot
# separate them alone: the crest scores up to 0.70 with face-like points, real side views 0.58-0.72.
# Still images (an image or a folder) have no second frame: every detection counts there.
TRACK_CONFIRM_HITS = 3
TRACK_CONFIRM_SCORE = 0.72
# Stills have no second frame, so a detection gets a second look instead: YuNet again on a window 3x its size
# enlarged so that the face is STILL_SECOND_LOOK_FACE_PX, and the mean of the two scores must reach
# TRACK_CONFIRM_SCORE, as a video track's mean does. Measured on the labelled street frames (first-pass
# detections >= 0.6, as stills): faces 33 of 35 kept, non-faces 1 of 4 (the crest above the entrance, 0.76 /
# 0.79); the newel-post knob of group-4faces-small.png 0.69 / 0.49 (was enhanced as a face); the faces of
# group-6faces.jpg downscaled 1x-8x (11-104 px) all kept (their second looks 0.90-0.94).
STILL_SECOND_LOOK_FACE_PX = 64

# --- Faces and composition ---------------------------------------------------------------------------
# Default --min-face, as a fraction of the smallest model input: the models still add detail down to about
# 0.6 x their input (`python -m benchmarks.crossover`, PFSR x8: +0.14 dB at 10 px native, +0.03 dB at 8 px).
MIN_FACE_INPUT_FRACTION = 0.6
MIN_FACE_PX = 10  # default --min-face for the 16 px models (0.6 x 16, rounded); faces smaller are skipped
MAX_FACES = 16  # default --max-faces per frame (largest first)
FEATHER_FRACTION = 0.12  # paste-back mask: linear ramp over this fraction of the face side
# Enhanced faces keep the recorded low frequencies (`runtime.tone`): Gaussian sigma in recorded pixels. The
# models drift in brightness (the previous tiled x8 weights: +0.4 to +0.9 grey levels on the group photos'
# faces, bicubic +/-0.5). 1.5 is the smallest sigma at which plain bicubic gains nothing from the same
# correction (-0.001 dB at K = 4 and 8; at 1.0 it gains +0.08 / +0.04 dB: the correction starts to copy the
# benchmark's area filter instead of undoing the model's drift). Whole frames (`python -m benchmarks.frames`,
# tiled pair, previous x8 weights): K = 4 all faces +1.14 -> +1.23 dB, worst face +0.05 -> +0.21; K = 8
# +0.90 -> +0.93, group photos +0.985 -> +1.014.
TONE_SIGMA_PX = 1.5
GALLERY_THUMB_FRACTION = 0.2  # gallery strip height as a fraction of the frame height
GALLERY_MIN_THUMB = 48  # smallest gallery tile (px): below this a face is not recognisable in the strip
GALLERY_MAX_ROWS = 3  # the strip wraps onto at most this many rows of smaller tiles

# --- Scale routing (runtime.routing) ----------------------------------------------------------------
# A face is enhanced only when its native size (framing square side) is at most CROSSOVER_RATIO x the
# model's input side: above that, interpolating the recorded pixels scores higher than shrinking them to the
# model's input and super-resolving. Measured two ways (Y-PSNR against the original, gain over bicubic):
# - aligned UTK test crops (`python -m benchmarks.crossover`, 200 faces): PFSR x8 wins up to 20 px native
#   (+0.34 dB at 20, -0.12 at 22: ratio 1.25), the DIC CPU demo up to 17 px (+0.06; -0.31 at 18: 1.06);
# - whole frames (`python -m benchmarks.frames`, detected and framed by the runtime): PFSR loses 0.81 dB on
#   16-24 px faces (K = 4, 12 faces) and gains 0.36 dB on 12-16 px faces (K = 8).
# Real framing is less kind than aligned crops, so the rule takes the smaller: faces no larger than the input.
CROSSOVER_RATIO = 1.0
# And only when it is shown at least MIN_MAGNIFICATION_RATIO x the model's own scale (output / input side)
# times its recorded size: a model's output shrunk for display keeps its framing and colour errors but loses
# the detail it added. Whole frames (`python -m benchmarks.frames`, before this rule): the x4 model shown 2x
# lost 1.32 dB on 24-32 px faces; the x8 model shown 4x lost 0.13 / 0.04 dB on 12-16 / 16-24 px faces and
# gained 0.36 dB on 12-16 px faces shown 8x; the x4 model shown 4x: +0.09 dB on 24-32 px faces.
MIN_MAGNIFICATION_RATIO = 1.0
# Nor when it is smaller than MIN_INPUT_RATIO x the model's input side: the crop is then interpolated up to
# the input, a blur the models were not trained on. Whole frames, x4 model (32 px input) shown 4x: 12-16 px
# faces -0.27 dB, 16-24 px -0.15 dB (-0.12 with a floor of 0.6 x the input), 24-32 px +0.09 dB.
MIN_INPUT_RATIO = 0.75
# A tiled model (`runtime.tiles`) never interpolates a face up to its input: it sees the recorded pixels with
# their surroundings. Its floor is TILED_MIN_INPUT_RATIO x the input (x4: 11.2 px, x8: 5.6 px). Whole frames
# (`python -m benchmarks.frames`, pfsr_tiled_utk + pfsr_x4_frames_utk, both tiled), floor 0.35 against the
# resize floors (0.55 / 0.6): K = 4 all 20 faces +0.75 dB (was +0.33; street faces of 12-16 px +0.48 to +2.07),
# K = 8 +0.74 (was +0.63), no face newly losing.
TILED_MIN_INPUT_RATIO = 0.35
