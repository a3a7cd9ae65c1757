"""The ChArUco calibration board: its geometry, its printable image, detection in a frame and its pose.

A ChArUco board is a chessboard whose white squares carry ArUco markers: the markers name each corner,
so a partly hidden or oblique board still gives corners with known board coordinates. The board frame is
OpenCV's: origin at the top-left corner of the printed squares, x along the columns, y down the rows,
z into the board (the printed face looks along -z).
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from dojo.errors import DojoError


class CalibrationError(DojoError):
    """A calibration that cannot go on; the message says what to do about it."""


def cv2_module():
    """OpenCV, or an error naming the extra that installs it (the robot machine may not have it)."""
    try:
        import cv2
    except ImportError as err:
        raise CalibrationError(f"calibration needs OpenCV ({err}); install it with: pip install "
                               "'dojo-robot[calib]'") from err
    if not hasattr(cv2, "calibrateHandEye") or not hasattr(cv2, "aruco"):
        raise CalibrationError(f"OpenCV {cv2.__version__} lacks the hand-eye solvers or ArUco (opencv-python "
                               "5.0.0.93 does); install the pinned 4.x build with: pip install 'dojo-robot[calib]'")
    return cv2


@dataclasses.dataclass(frozen=True)
class BoardSpec:
    """A ChArUco board as printed: squares per row and column, square and marker sides in metres, and the
    ArUco dictionary (an OpenCV DICT_ name without the prefix)."""

    squares_x: int = 9
    squares_y: int = 7
    square_m: float = 0.03
    marker_m: float = 0.022
    dictionary: str = "4X4_100"

    def __post_init__(self) -> None:
        for name in ("squares_x", "squares_y"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 3):
                raise ValueError(f"board {name} must be an integer >= 3, got {value!r}")
        if not (np.isfinite(self.square_m) and self.square_m > 0):
            raise ValueError(f"board square_m must be a positive length in metres, got {self.square_m!r}")
        if not (0 < self.marker_m < self.square_m):
            raise ValueError(f"board marker_m must lie in (0, square_m={self.square_m}), got {self.marker_m!r}")
        markers = self.squares_x * self.squares_y // 2
        size = int(self.dictionary.split("_")[-1]) if self.dictionary.split("_")[-1].isdigit() else 0
        if size and size < markers:
            raise ValueError(f"board dictionary {self.dictionary!r} has {size} markers, the board needs {markers}")

    @property
    def size_m(self) -> tuple[float, float]:
        """(width, height) of the printed squares."""
        return self.squares_x * self.square_m, self.squares_y * self.square_m

    @property
    def num_corners(self) -> int:
        return (self.squares_x - 1) * (self.squares_y - 1)

    def corner_points_m(self) -> np.ndarray:
        """(num_corners, 3) inner chessboard corners in the board frame, indexed by corner id."""
        i, j = np.meshgrid(np.arange(1, self.squares_x), np.arange(1, self.squares_y))
        return np.stack([i.ravel() * self.square_m, j.ravel() * self.square_m,
                         np.zeros(self.num_corners)], axis=1)

    def center_m(self) -> np.ndarray:
        width, height = self.size_m
        return np.array([width / 2, height / 2, 0.0])

    def cv_board(self):
        return _cv_board(self)

    def image(self, px_per_square: int = 100) -> np.ndarray:
        """The board as a grey uint8 image, squares edge to edge (print it at square_m per square)."""
        return self.cv_board().generateImage((self.squares_x * px_per_square, self.squares_y * px_per_square),
                                             marginSize=0, borderBits=1)


@functools.lru_cache(maxsize=8)
def _cv_board(spec: BoardSpec):
    cv2 = cv2_module()
    name = f"DICT_{spec.dictionary.upper()}"
    if not hasattr(cv2.aruco, name):
        raise ValueError(f"board dictionary must name an OpenCV ArUco dictionary such as '4X4_100', "
                         f"got {spec.dictionary!r}")
    dictionary = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, name))
    return cv2.aruco.CharucoBoard((spec.squares_x, spec.squares_y), spec.square_m, spec.marker_m, dictionary)


@functools.lru_cache(maxsize=8)
def _detector(spec: BoardSpec):
    cv2 = cv2_module()
    params = cv2.aruco.CharucoParameters()
    params.tryRefineMarkers = True  # recovers markers the first pass missed, using the board layout
    detector_params = cv2.aruco.DetectorParameters()
    return cv2.aruco.CharucoDetector(spec.cv_board(), params, detector_params)


@dataclasses.dataclass(frozen=True)
class BoardView:
    """The board's corners found in one image: ids, pixel positions and board coordinates."""

    ids: np.ndarray  # (n,) corner ids
    corners_px: np.ndarray  # (n, 2) float, OpenCV pixel coordinates (pixel centres at integers)
    points_m: np.ndarray  # (n, 3) the same corners in the board frame
    image_size: tuple[int, int]  # (height, width)
    timestamp_s: float = 0.0

    @property
    def num_corners(self) -> int:
        return len(self.ids)


def detect_board(rgb: np.ndarray, spec: BoardSpec, min_corners: int = 6, timestamp_s: float = 0.0) -> BoardView | None:
    """The board's corners in an RGB (or grey) uint8 image, or None when fewer than `min_corners` are seen."""
    cv2 = cv2_module()
    image = np.asarray(rgb)
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    corners, ids, _, _ = _detector(spec).detectBoard(grey)
    if ids is None or len(ids) < min_corners:
        return None
    ids = ids.reshape(-1).astype(int)
    return BoardView(ids=ids, corners_px=corners.reshape(-1, 2).astype(np.float64),
                     points_m=spec.corner_points_m()[ids], image_size=tuple(grey.shape[:2]),
                     timestamp_s=float(timestamp_s))


def board_pose(view: BoardView, K: np.ndarray, dist: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """T_cam_board from one view (PnP, then Levenberg-Marquardt refinement), and its RMS reprojection error in px.

    A planar board needs at least 4 corners that are not all on one line.
    """
    cv2 = cv2_module()
    if view.num_corners < 4:
        raise CalibrationError(f"a board pose needs at least 4 corners, this view has {view.num_corners}")
    dist = np.zeros(5) if dist is None else np.asarray(dist, dtype=np.float64)
    obj, img = view.points_m.astype(np.float64), view.corners_px.astype(np.float64)
    ok, rvec, tvec = cv2.solvePnP(obj, img, K, dist, flags=cv2.SOLVEPNP_IPPE)
    if not ok:
        raise CalibrationError(f"no board pose from {view.num_corners} corners: are they all on one line?")
    rvec, tvec = cv2.solvePnPRefineLM(obj, img, K, dist, rvec, tvec)
    projected, _ = cv2.projectPoints(obj, rvec, tvec, K, dist)
    rms = float(np.sqrt(np.mean(np.sum((projected.reshape(-1, 2) - img) ** 2, axis=1))))
    T = np.eye(4)
    T[:3, :3] = cv2.Rodrigues(rvec)[0]
    T[:3, 3] = tvec.reshape(3)
    return T, rms


def project(points: np.ndarray, T_cam_frame: np.ndarray, K: np.ndarray, dist: np.ndarray | None = None) -> np.ndarray:
    """Pixel positions of 3-D points given in some frame, seen by a camera at T_cam_frame."""
    cv2 = cv2_module()
    rvec = cv2.Rodrigues(np.asarray(T_cam_frame[:3, :3], dtype=np.float64))[0]
    dist = np.zeros(5) if dist is None else np.asarray(dist, dtype=np.float64)
    projected, _ = cv2.projectPoints(np.asarray(points, dtype=np.float64).reshape(-1, 3), rvec,
                                     np.asarray(T_cam_frame[:3, 3], dtype=np.float64), K, dist)
    return projected.reshape(-1, 2)
