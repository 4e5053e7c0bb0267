"""Where the converter writes: an output folder that could lose a file is refused with one `error:` line and
exit code 2 before converting; `--overwrite` replaces only a folder this converter wrote; a full disk keeps
the replaced folder and leaves no staging folder; legal names of any bytes are written as they are.

Every case compares every file under the test's folder, byte for byte, before and after. Interrupted,
racing and failing writes: test_interrupted_and_racing_writes.py.
"""

import errno
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import assert_refused, convert_args, tree


pytestmark = pytest.mark.usefixtures("one_thread")


def test_forbidden_conversion_stops_a_valid_run(workdir, converter, conversion_forbidden):
    with pytest.raises(pytest.fail.Exception, match="built the pipeline before refusing"):
        converter(*convert_args(workdir / "inputs" / "ckpt.pt", workdir / "outputs" / "out"))


# ================================================================= refused before converting


def _setup_symlink(workdir):
    (workdir / "outputs" / "real").mkdir()
    (workdir / "outputs" / "link").symlink_to(workdir / "outputs" / "real")
    return workdir / "outputs" / "link", []


def _setup_not_ours(workdir):
    (workdir / "outputs" / "mine").mkdir()
    (workdir / "outputs" / "mine" / "thesis.tex").write_text("years of work")
    return workdir / "outputs" / "mine", ["--overwrite"]


def _setup_foreign_model_index(workdir):
    (workdir / "outputs" / "sd").mkdir()
    (workdir / "outputs" / "sd" / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    return workdir / "outputs" / "sd", ["--overwrite"]


OUTPUT_CASES = {
    # id: (set-up returning (output_dir, extra options), texts the message must hold)
    "empty path (an unset variable)": (lambda w: ("", []), ["empty"]),
    "empty path with --overwrite": (lambda w: ("", ["--overwrite"]), ["empty"]),
    "the current folder": (lambda w: (".", []), ["current folder"]),
    "the current folder with --overwrite": (lambda w: (".", ["--overwrite"]), ["current folder"]),
    "a folder holding the current folder": (lambda w: (w, ["--overwrite"]), ["current folder"]),
    "'..' with --overwrite": (lambda w: ("..", ["--overwrite"]), ["current folder"]),
    "a symbolic link": (_setup_symlink, ["symbolic link"]),
    "a non-empty folder without --overwrite": (lambda w: (w / "outputs", []), ["not empty", "--overwrite"]),
    "--overwrite onto a folder we did not write": (
        _setup_not_ours,
        ["not a pipeline folder written by this converter"],
    ),
    "--overwrite onto another pipeline's folder": (_setup_foreign_model_index, ["not a pipeline folder"]),
    "a path through a file": (lambda w: (w / "outputs" / "keep.txt" / "out", []), ["keep.txt", "is a file"]),
    "an existing file": (lambda w: (w / "outputs" / "keep.txt", ["--overwrite"]), ["is not a folder"]),
    "a name of 256 bytes": (lambda w: (w / "outputs" / ("n" * 256), []), ["256 bytes long", "limit here is 255"]),
    "a name of 256 bytes in 2-byte letters": (
        lambda w: (w / "outputs" / ("é" * 128), []),
        ["256 bytes long", "limit here is 255"],
    ),
    "a path of 4096 bytes": (lambda w: (w / "outputs" / ("p/" * 2048), []), ["bytes long", "limit here is 4095"]),
}


@pytest.mark.parametrize("case", OUTPUT_CASES)
def test_output_folder_that_could_lose_files_is_refused_before_converting(
    case, workdir, converter, conversion_forbidden
):
    setup, expected = OUTPUT_CASES[case]
    output_dir, options = setup(workdir)
    before = tree(workdir)
    code, stderr = converter(*convert_args(workdir / "inputs" / "ckpt.pt", output_dir, *options))
    assert_refused(code, stderr, *expected)
    assert tree(workdir) == before


def test_overwrite_refuses_a_pipeline_folder_holding_the_input_checkpoint(workdir, converter, our_folder):
    checkpoint = our_folder / "ckpt.pt"
    shutil.copy(workdir / "inputs" / "ckpt.pt", checkpoint)
    before = tree(workdir)
    assert_refused(*converter(*convert_args(checkpoint, our_folder, "--overwrite")), "holds the input", "ckpt.pt")
    assert tree(workdir) == before


def test_overwrite_refuses_a_pipeline_folder_holding_the_text_encoder(
    workdir, converter, our_folder, text_encoder_folder
):
    inside = our_folder / "my_encoder"
    shutil.copytree(text_encoder_folder, inside)
    before = tree(workdir)
    args = ["--checkpoint", workdir / "inputs" / "ckpt.pt", "--output_dir", our_folder, "--text_encoder", inside]
    assert_refused(*converter(*args, "--overwrite"), "holds the input", "my_encoder")
    assert tree(workdir) == before


def test_overwrite_refuses_a_pipeline_folder_holding_the_working_directory(
    workdir, converter, our_folder, monkeypatch
):
    (our_folder / "notes").mkdir()
    monkeypatch.chdir(our_folder / "notes")
    before = tree(workdir)
    assert_refused(
        *converter(*convert_args(workdir / "inputs" / "ckpt.pt", our_folder, "--overwrite")), "current folder"
    )
    assert tree(workdir) == before


def test_unwritable_parent_is_refused_before_converting(workdir, converter, conversion_forbidden, monkeypatch):
    # Tests may run as root, for whom chmod does not deny writing: make the OS answer "not writable".
    locked = workdir / "outputs"
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == locked else real_access(p, mode))
    before = tree(workdir)
    assert_refused(*converter(*convert_args(workdir / "inputs" / "ckpt.pt", locked / "new" / "out")), "not writable")
    assert tree(workdir) == before


# ================================================================= a full disk


def _json_fills_the_disk(self, save_directory, **kwargs):
    Path(save_directory, "model_index.json").write_bytes(b"{")
    raise OSError(errno.ENOSPC, "No space left on device", str(Path(save_directory, "model_index.json")))


def _safetensors_fills_the_disk(tensors, filename, metadata=None):
    """What safetensors' Rust writer raises on a full disk: a SafetensorError, which is not an OSError."""
    from safetensors import SafetensorError

    Path(filename).write_bytes(b"\0" * 100)
    raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


FULL_DISK_CASES = {
    "safetensors' own error": ("safetensors.torch.save_file", _safetensors_fills_the_disk),
    "an OSError writing a JSON file": (
        "pipeline_mnist_ddim.pipeline_mnist_ddim.MNISTDDIMPipeline.save_pretrained",
        _json_fills_the_disk,
    ),
}


@pytest.mark.parametrize("case", FULL_DISK_CASES)
@pytest.mark.parametrize("overwrite", [True, False], ids=["--overwrite", "a new folder"])
def test_full_disk_keeps_the_replaced_folder_and_leaves_no_staging(
    case, overwrite, workdir, converter, our_folder, monkeypatch
):
    target, fake = FULL_DISK_CASES[case]
    monkeypatch.setattr(target, fake)
    before = tree(workdir)
    output = our_folder if overwrite else workdir / "outputs" / "new"
    code, stderr = converter(*convert_args(workdir / "inputs" / "ckpt.pt", output, *(["--overwrite"] * overwrite)))
    assert_refused(code, stderr, "no space left on the device", str(output))
    assert tree(workdir) == before


@pytest.fixture
def small_tmpfs(tmp_path):
    """A real 16 MiB tmpfs (a tiny conversion writes ~10 MiB): mounting needs root, skipped otherwise."""
    mountpoint = tmp_path / "small"
    mountpoint.mkdir()
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8): the fake full-disk cases above still run")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mountpoint)], capture_output=True)
    if mounted.returncode != 0:  # a container without CAP_SYS_ADMIN
        pytest.skip(f"this machine refuses to mount a tmpfs ({mounted.stderr.decode().strip()})")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)


def test_a_really_full_disk_ends_in_one_line_and_keeps_every_file(workdir, converter, small_tmpfs):
    checkpoint = workdir / "inputs" / "ckpt.pt"
    filler = small_tmpfs / "filler.bin"
    filler.write_bytes(b"\1" * (10 * 2**20))  # 6 MiB left: too little for a new folder
    before = tree(small_tmpfs)
    assert_refused(*converter(*convert_args(checkpoint, small_tmpfs / "new")), "no space left on the device")
    assert tree(small_tmpfs) == before

    filler.unlink()
    assert converter(*convert_args(checkpoint, small_tmpfs / "pipe"))[0] == 0
    (small_tmpfs / "keep.txt").write_text("precious output")
    before = tree(small_tmpfs)  # the folder fills 10 of 16 MiB: no room for its replacement
    code, stderr = converter(*convert_args(checkpoint, small_tmpfs / "pipe", "--overwrite"))
    assert_refused(code, stderr, "no space left on the device", str(small_tmpfs / "pipe"))
    assert tree(small_tmpfs) == before


# ================================================================= what is written


LEGAL_NAMES = {
    "255 bytes": "n" * 255,
    "255 bytes in 2- and 1-byte letters": "é" * 127 + "n",
    "not valid UTF-8": os.fsdecode(b"out\xfe\xff"),
}


@pytest.mark.parametrize("case", LEGAL_NAMES)
def test_legal_output_names_are_written_and_printed_as_they_are(case, workdir, convert_script, capsysbinary):
    """The staging name stays short whatever the target's; the printed path is the name's bytes."""
    output = workdir / "outputs" / LEGAL_NAMES[case]
    assert convert_script.main([str(a) for a in convert_args(workdir / "inputs" / "ckpt.pt", output)]) == 0
    assert capsysbinary.readouterr().out == os.fsencode(output) + b"\n"
    assert (output / "model_index.json").is_file() and (output / "README.md").is_file()
    assert sorted(p.name for p in (workdir / "outputs").iterdir()) == sorted(["keep.txt", output.name])


def test_atomic_path_keeps_a_255_byte_name_and_its_extension(tmp_path):
    from pipeline_mnist_ddim.conversion.files import atomic_path

    target = tmp_path / ("g" * 251 + ".png")
    with atomic_path(str(target)) as temporary:
        assert temporary.endswith(".png") and len(os.path.basename(temporary)) < 100
        Path(temporary).write_bytes(b"image")
    assert [p.name for p in tmp_path.iterdir()] == [target.name] and target.read_bytes() == b"image"


def test_written_folder_has_the_permissions_the_umask_gives(workdir, converter):
    umask = os.umask(0o022)
    try:
        assert converter(*convert_args(workdir / "inputs" / "ckpt.pt", workdir / "outputs" / "out"))[0] == 0
    finally:
        os.umask(umask)
    assert (workdir / "outputs" / "out").stat().st_mode & 0o777 == 0o755


def test_overwrite_replaces_our_folder_and_keeps_every_file_beside_it(workdir, converter, our_folder):
    (our_folder / "stale.txt").write_text("from an earlier conversion")
    assert converter(*convert_args(workdir / "inputs" / "ckpt.pt", our_folder, "--overwrite"))[0] == 0
    assert not (our_folder / "stale.txt").exists() and (our_folder / "model_index.json").is_file()
    assert (our_folder / "unet" / "unet_mnist.py").is_file()
    assert (workdir / "outputs" / "keep.txt").read_text() == "precious output"
    assert (workdir / "inputs" / "ckpt.pt").is_file() and (workdir / "inputs" / "notes.txt").is_file()
    assert sorted(p.name for p in (workdir / "outputs").iterdir()) == ["keep.txt", "pipe"]


def test_bad_checkpoint_with_overwrite_keeps_the_existing_folder(workdir, converter, our_folder):
    (our_folder / "notes.txt").write_text("precious")
    foreign = workdir / "inputs" / "linear.pt"
    torch.save(torch.nn.Linear(3, 3).state_dict(), foreign)
    before = tree(workdir)
    assert_refused(*converter(*convert_args(foreign, our_folder, "--overwrite")), "Lesson 5e")
    assert tree(workdir) == before
