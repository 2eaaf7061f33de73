"""train.paths: folders typed in the Train tab stay inside the data root."""

from __future__ import annotations

import pytest

from train.paths import PathError, check_run_name, confined_path, relative_to


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "data"
    (root / "corpus" / "training").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (root / "escape").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (root / "inside-link").symlink_to(root / "corpus", target_is_directory=True)
    return root


@pytest.mark.parametrize("typed, expected", [
    ("corpus", "corpus"), ("corpus/training", "corpus/training"), ("./corpus", "corpus"), ("  corpus  ", "corpus"),
    ("new/run", "new/run"), ("inside-link", "corpus"),  # a link that stays inside is fine
])
def test_paths_inside_the_root_resolve(root, typed, expected):
    assert confined_path(typed, root) == (root / expected).resolve()


def test_an_absolute_path_inside_the_root_is_accepted(root):
    assert confined_path(str(root / "corpus"), root, must_exist=True) == (root / "corpus").resolve()


@pytest.mark.parametrize("typed, message", [
    ("..", "'..' is not allowed"), ("../elsewhere", "'..' is not allowed"), ("corpus/../../x", "'..' is not allowed"),
    ("corpus/..", "'..' is not allowed"), ("/etc", "outside the data folder"), ("/", "outside the data folder"),
    ("escape", "symbolic link"), ("escape/inner", "symbolic link"), ("", "Type a folder"), ("   ", "Type a folder"),
    (None, "Type a folder"), ("a\x00b", "NUL"),
])
def test_escapes_are_refused_with_a_message(root, typed, message):
    with pytest.raises(PathError, match=message):
        confined_path(typed, root)


def test_an_absolute_path_elsewhere_is_refused(root, tmp_path):
    with pytest.raises(PathError, match="outside the data folder"):
        confined_path(str(tmp_path / "elsewhere"), root)


def test_a_root_that_is_itself_a_link_still_confines(tmp_path, root):
    linked_root = tmp_path / "root-link"
    linked_root.symlink_to(root, target_is_directory=True)
    assert confined_path("corpus", linked_root) == (root / "corpus").resolve()
    with pytest.raises(PathError, match="symbolic link"):
        confined_path("escape", linked_root)


def test_must_exist(root):
    with pytest.raises(PathError, match="does not exist"):
        confined_path("missing", root, must_exist=True)
    assert confined_path("missing", root) == (root / "missing").resolve()


@pytest.mark.parametrize("name", ["run-1", "a.b_c", "R2"])
def test_run_names(name):
    assert check_run_name(name) == name


@pytest.mark.parametrize("name", ["", ".hidden", "..", "a/b", "a b", "x\\y", "é"])
def test_bad_run_names(name):
    with pytest.raises(PathError, match="run name"):
        check_run_name(name)


def test_relative_to(root, tmp_path):
    assert relative_to(root.resolve() / "runs" / "a", root) == "runs/a"
    assert relative_to(tmp_path / "x", root) == str(tmp_path / "x")
