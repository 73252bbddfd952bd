"""Paths built from params stay inside the output root: `..`, absolute paths and symlinks are refused."""

from __future__ import annotations

import pytest

from source.errors import InvalidParams
from source.paths import inside_root, safe_filename


@pytest.mark.parametrize("parts", [("..", "etc", "passwd"), ("a", "..", "..", "x"), ("/etc/passwd",), ("/",)])
def test_escaping_paths_are_refused(tmp_path, parts):
    with pytest.raises(InvalidParams, match="leaves the output directory"):
        inside_root(tmp_path / "root", *parts)


def test_symlink_pointing_outside_the_root_is_refused(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(tmp_path)
    with pytest.raises(InvalidParams, match="leaves the output directory"):
        inside_root(root, "link", "secret.txt")


def test_paths_inside_the_root_resolve_normally(tmp_path):
    root = tmp_path / "root"
    assert inside_root(root, "sub", "..", "file.mp4") == (root / "file.mp4").resolve()
    assert inside_root(root, "a", "b.png") == (root / "a" / "b.png").resolve()


@pytest.mark.parametrize(
    ("name", "expected"),
    [("../../etc/passwd", "passwd"), ("my video.mp4", "my_video.mp4"), ("..", "output"), ("a/b\\c;rm -rf", "b_c_rm_-rf")],
)
def test_safe_filename_keeps_only_a_plain_name(name, expected):
    assert safe_filename(name) == expected
