"""One OpenCV distribution for the whole project: the one pyproject.toml declares, with contrib modules.

mediapipe (the offline pose models) depends on opencv-contrib-python; a second OpenCV wheel installed
beside it would overwrite the same ``cv2`` package with files of another build.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import cv2

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest's own dependency
    import tomli as tomllib

from tests.helpers import REPO_ROOT

OPENCV_DISTRIBUTIONS = {"opencv-python", "opencv-python-headless", "opencv-contrib-python",
                        "opencv-contrib-python-headless"}


def _declared_opencv() -> str:
    dependencies = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[<>=!~;\[ ]", dep, maxsplit=1)[0].lower() for dep in dependencies}
    declared = names & OPENCV_DISTRIBUTIONS
    assert len(declared) == 1, declared
    return declared.pop()


def test_cv2_is_the_declared_opencv_build_and_the_only_one_installed():
    declared = _declared_opencv()
    assert declared == "opencv-contrib-python"
    installed = {dist.metadata["Name"].lower() for dist in metadata.distributions()} & OPENCV_DISTRIBUTIONS
    assert installed == {declared}
    dist = metadata.distribution(declared)
    owned = {Path(str(dist.locate_file(file))).resolve() for file in dist.files or ()}
    assert Path(cv2.__file__).resolve() in owned
    assert dist.version.startswith(cv2.__version__ + ".")


def test_cv2_has_the_contrib_modules_and_dis_flow_the_project_uses():
    assert hasattr(cv2, "ximgproc") and hasattr(cv2, "optflow")
    assert cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM) is not None
