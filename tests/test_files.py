"""Atomic writes and telling a Hub repo id from a local path."""

import os

import pytest

from pipeline_mnist_ddim.conversion.files import atomic_path, is_hub_id


def test_atomic_write_replaces_the_file_only_when_writing_succeeds(tmp_path):
    target = tmp_path / "settings.json"
    target.write_text("old")
    with pytest.raises(OSError, match="disk full"):
        with atomic_path(str(target)) as temporary:
            with open(temporary, "w") as f:
                f.write("half")
            raise OSError("disk full")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["settings.json"]
    with atomic_path(str(target)) as temporary, open(temporary, "w") as f:
        f.write("new")
    assert target.read_text() == "new" and os.listdir(tmp_path) == ["settings.json"]


def test_temporary_name_keeps_the_extension_that_picks_the_format(tmp_path):
    with atomic_path(str(tmp_path / "grid.png")) as temporary:
        assert temporary.endswith("grid.png") and os.path.dirname(temporary) == str(tmp_path)
        open(temporary, "w").close()


@pytest.mark.parametrize("source", ["openai/clip-vit-large-patch14", "mnist-ddim"])
def test_a_valid_repo_id_that_is_no_local_path_is_a_hub_id(source, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert is_hub_id(source)


@pytest.mark.parametrize("source", ["/abs/folder", "./folder", "out/run/pipeline", "C:\\models\\mnist", "a b/c"])
def test_paths_and_malformed_ids_are_not_hub_ids(source, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert not is_hub_id(source)


def test_an_existing_folder_is_not_a_hub_id_even_if_it_reads_like_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "user" / "mnist").mkdir(parents=True)
    assert not is_hub_id("user/mnist")
