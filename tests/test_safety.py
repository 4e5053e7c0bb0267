"""Safety of the command-line tools: every bad input a user can give ends in one `error:` line with exit
code 2, before any slow work, and every file that existed before still exists, byte for byte.

Each case runs the tool in-process (`main(argv)`), except the SIGTERM and race cases, which need
processes of their own. The cases are tables: one row per input, with the text the message must hold.
"""

import errno
import importlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT, lesson_state_dict


pytestmark = pytest.mark.usefixtures("one_thread")

TORCH_UNSAFE_ADVICE = ("weights_only=False", "weights_only` set to `False`", "will likely succeed")


COMMANDS = {
    "sample_ddim": "sample",
    "benchmark": "benchmark",
    "evaluate": "evaluate",
    "interpolate": "interpolate",
    "train_lesson5e": "train",
}  # scripts/<name>.py wraps pipeline_mnist_ddim.tools.commands.<command>


def command_module(name: str):
    return importlib.import_module(f"pipeline_mnist_ddim.tools.commands.{COMMANDS[name]}")


def tree(root: Path) -> dict:
    """Every file under ``root`` (hidden ones too) and its bytes; symbolic links as their targets."""
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            files[str(path.relative_to(root))] = f"-> {os.readlink(path)}"
        elif path.is_file():
            files[str(path.relative_to(root))] = path.read_bytes()
        elif path.is_dir():
            files[str(path.relative_to(root)) + "/"] = "dir"
    return files


def assert_refused(code: int, stderr: str, *expected_in_message: str) -> str:
    assert code == 2, stderr
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]  # progress bars may precede it
    assert len(errors) == 1, stderr
    for text in expected_in_message:
        assert text in errors[0], f"{text!r} not in {errors[0]!r}"
    assert not any(advice in stderr for advice in TORCH_UNSAFE_ADVICE), stderr
    return errors[0]


@pytest.fixture
def workdir(tmp_path, lesson_checkpoint, monkeypatch):
    """inputs/ (a lesson checkpoint and a note), outputs/ (a note): the user's files, which must survive.

    The working directory is inputs/, so a path that resolves to "here" points at the user's files.
    """
    (tmp_path / "inputs").mkdir()
    (tmp_path / "outputs").mkdir()
    shutil.copy(lesson_checkpoint, tmp_path / "inputs" / "ckpt.pt")
    (tmp_path / "inputs" / "notes.txt").write_text("precious input")
    (tmp_path / "outputs" / "keep.txt").write_text("precious output")
    monkeypatch.chdir(tmp_path / "inputs")
    return tmp_path


@pytest.fixture
def converter(convert_script, capsys):
    """(exit code, stderr) of `convert_checkpoint.py` with these arguments."""

    def run(*argv):
        code = convert_script.main([str(a) for a in argv])
        return code, capsys.readouterr().err

    return run


def convert_args(checkpoint, output_dir, *options):
    return ["--checkpoint", checkpoint, "--output_dir", output_dir, "--text_encoder", "none", *options]


def _build_pipeline_forbidden(*args, **kwargs):
    pytest.fail("the converter built the pipeline before refusing")


@pytest.fixture
def conversion_forbidden(monkeypatch):
    """Fails the test if the converter gets as far as building the pipeline (the slow part).

    The command imports `build_pipeline` inside `convert()`, so it finds this replacement when it
    runs; `test_forbidden_conversion_stops_a_valid_run` proves that, so "refused first" is enforced.
    """
    monkeypatch.setattr("pipeline_mnist_ddim.conversion.pipeline_builder.build_pipeline", _build_pipeline_forbidden)


def test_forbidden_conversion_stops_a_valid_run(workdir, converter, conversion_forbidden):
    with pytest.raises(pytest.fail.Exception, match="built the pipeline before refusing"):
        converter(*convert_args(workdir / "inputs" / "ckpt.pt", workdir / "outputs" / "out"))


@pytest.fixture
def our_folder(workdir, converter) -> Path:
    """A pipeline folder the converter wrote: outputs/pipe."""
    folder = workdir / "outputs" / "pipe"
    assert converter(*convert_args(workdir / "inputs" / "ckpt.pt", folder))[0] == 0
    return folder


# ================================================================= 1. the output folder: nothing lost


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


def test_ctrl_c_during_the_save_keeps_the_replaced_folder_and_leaves_no_staging(
    workdir, converter, our_folder, monkeypatch
):
    def interrupted(self, save_directory, **kwargs):
        Path(save_directory, "half-written.safetensors").write_bytes(b"\0" * 100)
        raise KeyboardInterrupt

    monkeypatch.setattr("pipeline_mnist_ddim.pipeline_mnist_ddim.MNISTDDIMPipeline.save_pretrained", interrupted)
    before = tree(workdir)
    code, stderr = converter(*convert_args(workdir / "inputs" / "ckpt.pt", our_folder, "--overwrite"))
    assert code == 130 and "interrupted" in stderr.splitlines() and "Traceback" not in stderr
    assert tree(workdir) == before


def test_a_folder_written_meanwhile_by_someone_else_is_kept_and_the_loser_says_so(workdir, converter, monkeypatch):
    """Another process finishes first, between our checks and our rename: its folder wins, intact."""
    from pipeline_mnist_ddim.pipeline_mnist_ddim import MNISTDDIMPipeline

    target = workdir / "outputs" / "new"
    real_save = MNISTDDIMPipeline.save_pretrained

    def save_while_another_writer_finishes(self, save_directory, **kwargs):
        real_save(self, save_directory, **kwargs)
        target.mkdir()
        (target / "theirs.txt").write_text("the other conversion")

    monkeypatch.setattr(MNISTDDIMPipeline, "save_pretrained", save_while_another_writer_finishes)
    code, stderr = converter(*convert_args(workdir / "inputs" / "ckpt.pt", target))
    assert_refused(code, stderr, "written by another process")
    assert [p.name for p in target.iterdir()] == ["theirs.txt"]
    assert sorted(p.name for p in (workdir / "outputs").iterdir()) == ["keep.txt", "new"]  # no staging left


def _converter_process(checkpoint, output_dir, prelude=""):
    code = textwrap.dedent(prelude) + textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO_ROOT)!r})
        import convert_checkpoint
        sys.exit(convert_checkpoint.main(["--checkpoint", {str(checkpoint)!r}, "--output_dir", {str(output_dir)!r},
                                          "--text_encoder", "none"]))
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.mark.slow  # two fresh processes
def test_two_racing_conversions_into_one_new_folder_exactly_one_wins(workdir):
    target = workdir / "outputs" / "race"
    racers = [_converter_process(workdir / "inputs" / "ckpt.pt", target) for _ in range(2)]
    results = [(racer.wait(timeout=300), racer.stderr.read()) for racer in racers]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser_stderr = next(stderr for code, stderr in results if code == 2)
    assert_refused(2, loser_stderr)  # "not empty" or "written by another process", depending on timing
    assert (target / "model_index.json").is_file()
    assert sorted(p.name for p in (workdir / "outputs").iterdir()) == ["keep.txt", "race"]


@pytest.mark.slow  # a fresh process
def test_sigterm_during_the_save_removes_the_staging_folder(workdir):
    # The process terminates itself half-way through writing, as `kill` or a job scheduler would.
    prelude = """
        import os, signal
        from pipeline_mnist_ddim.pipeline_mnist_ddim import MNISTDDIMPipeline
        real_save = MNISTDDIMPipeline.save_pretrained
        def save_then_get_killed(self, save_directory, **kwargs):
            real_save(self, save_directory, **kwargs)
            os.kill(os.getpid(), signal.SIGTERM)
        MNISTDDIMPipeline.save_pretrained = save_then_get_killed
    """
    before = tree(workdir)
    process = _converter_process(workdir / "inputs" / "ckpt.pt", workdir / "outputs" / "killed", prelude)
    assert process.wait(timeout=300) == 128 + signal.SIGTERM, process.stderr.read()
    assert tree(workdir) == before  # neither the folder nor a .tmp-killed-* staging folder


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
    assert (workdir / "outputs" / "keep.txt").read_text() == "precious output"
    assert (workdir / "inputs" / "ckpt.pt").is_file() and (workdir / "inputs" / "notes.txt").is_file()
    assert sorted(p.name for p in (workdir / "outputs").iterdir()) == ["keep.txt", "pipe"]


# ================================================================= 2. checkpoints that would sample garbage


def _required_keys_only(base=32, in_channels=1, out_channels=1, context=32, inner=64):
    """Just the tensors the configuration is read from: enough to reach the configuration checks."""
    return {
        "initial_convolution.weight": torch.zeros(base, in_channels, 3, 3),
        "final_projection.2.weight": torch.zeros(out_channels, base, 3, 3),
        "middle.1.proj_in.weight": torch.zeros(inner, base * 2, 1, 1),
        "middle.1.transformer_blocks.0.attn2.to_k.weight": torch.zeros(inner, context),
    }


def _with(key, value):
    def edit(state_dict):
        state_dict[key] = value(state_dict[key]) if callable(value) else value
        return state_dict

    return edit


CONV_IN = "_unet.initial_convolution.weight"


def _e8m0_nan(shape):
    values = torch.full(shape, 127, dtype=torch.uint8)  # 2**0
    values.view(-1)[0] = 0xFF  # e8m0's only NaN, which torch.isfinite calls finite
    return values.view(torch.float8_e8m0fnu)


def _as_dtype(tensor, name):
    if name == "float4_e2m1fn_x2":  # two values a byte: no conversion from float32, only a view of bytes
        return torch.zeros(tensor.shape, dtype=torch.uint8).view(torch.float4_e2m1fn_x2)
    return tensor.to(getattr(torch, name))


CHECKPOINT_CASES = {
    # id: (state dict edit or replacement, texts the message must hold)
    "a NaN weight": (
        _with(CONV_IN, lambda t: t.index_put((torch.tensor([0]),), torch.tensor(float("nan")))),
        ["NaN or infinite", "initial_convolution.weight"],
    ),
    "an infinite weight": (
        _with("_unet.ups.2.5.proj_out.bias", lambda t: t + float("inf")),
        ["NaN or infinite", "ups.2.5.proj_out.bias"],
    ),
    "integer weights": (_with(CONV_IN, lambda t: t.to(torch.int64)), ["non-floating-point", "torch.int64"]),
    "boolean weights": (_with(CONV_IN, lambda t: t > 0), ["non-floating-point", "torch.bool"]),
    "a sparse tensor": (_with(CONV_IN, lambda t: t.to_sparse()), ["sparse or meta", "initial_convolution.weight"]),
    "a stride-0 view claiming a huge width": (
        lambda sd: {**_required_keys_only(), CONV_IN: torch.zeros(1).expand(65536, 1, 3, 3)},
        ["less data than their shape claims", "initial_convolution.weight"],
    ),
    "an absurd base width": (lambda sd: _required_keys_only(base=512), ["implausibly large", "base_channels 512"]),
    "an absurd context width": (lambda sd: _required_keys_only(context=100_000), ["cross_attention_dim 100000"]),
    "an absurd transformer width": (lambda sd: _required_keys_only(inner=1024), ["transformer_inner_dim 1024"]),
    "a base width not a multiple of 32": (lambda sd: _required_keys_only(base=48), ["48", "multiple of 32"]),
    "in_channels != out_channels": (lambda sd: _required_keys_only(out_channels=3), ["predicts 3 channels from 1"]),
    "two image channels": (
        lambda sd: _required_keys_only(in_channels=2, out_channels=2),
        ["2 image channels", "1 or 3"],
    ),
    "a required key of the wrong rank": (
        lambda sd: {**_required_keys_only(), "initial_convolution.weight": torch.zeros(32, 9)},
        ["initial_convolution.weight has 2 dimensions, expected 4"],
    ),
    "non-string keys": (lambda sd: {**sd, 7: torch.zeros(1)}, ["names must be strings", "<a key of type int>"]),
    # float8 / float4: refused by name, before a NaN check that misses e8m0's NaN (0xFF) or crashes on the rest
    "a float8_e8m0fnu NaN": (_with(CONV_IN, lambda t: _e8m0_nan(t.shape)), ["never used", "torch.float8_e8m0fnu"]),
    **{
        f"{name} weights": (_with(CONV_IN, lambda t, name=name: _as_dtype(t, name)), ["never used", f"torch.{name}"])
        for name in ("float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz", "float4_e2m1fn_x2")
    },
    "a weight name with terminal escapes": (
        lambda sd: {**sd, "\x1b[2J\x1b[31mEVIL\r\u202e": torch.zeros(1)},
        ["unknown keys", "\\x1b[2J\\x1b[31mEVIL\\x0d\\u202e"],
    ),
}


def _save_bare(state_dict, path):
    torch.save(state_dict, path)


@pytest.mark.parametrize("case", CHECKPOINT_CASES)
def test_checkpoint_that_would_sample_garbage_is_refused_naming_the_tensors(case, workdir, converter, tiny_reference):
    edit, expected = CHECKPOINT_CASES[case]
    path = workdir / "inputs" / "bad.pt"
    _save_bare(edit(lesson_state_dict(tiny_reference)), path)
    before = tree(workdir)
    assert_refused(*converter(*convert_args(path, workdir / "outputs" / "out")), *expected)
    assert tree(workdir) == before


def test_width_caps_are_base_256_context_4096_transformer_512():
    """The caps docs/safety.md states: each width at its cap passes, one GroupNorm group (32) above is refused."""
    from pipeline_mnist_ddim.conversion.checkpoint import CheckpointError, check_unet_config

    at_caps = dict(
        in_channels=1, out_channels=1, base_channels=256, cross_attention_dim=4096, transformer_inner_dim=512
    )
    check_unet_config(at_caps)
    for name, cap in [("base_channels", 256), ("cross_attention_dim", 4096), ("transformer_inner_dim", 512)]:
        with pytest.raises(CheckpointError, match=f"{name} {cap + 32} \\(at most {cap}\\)"):
            check_unet_config({**at_caps, name: cap + 32})


def _self_nested_tuple(depth):
    key = ()
    for _ in range(depth):
        key = (key, key)  # pickled once per level (memo): 1.7 KB; its repr would be 2**depth long
    return key


HOSTILE_KEY_CASES = {
    # id: (payload to torch.save, texts the message must hold); each refused in seconds, in a bounded line
    "a tuple key nested in itself 26 times (1.7 KB)": (
        lambda: {_self_nested_tuple(26): torch.zeros(1)},
        ["names must be strings", "<a key of type tuple>"],
    ),
    "a top-level tuple key nested 26 times": (
        lambda: {"model_state_dict": [1], _self_nested_tuple(26): 0},
        ["top-level keys", "<a key of type tuple>"],
    ),
    "an 8.4 MB key of wrapper prefixes": (
        lambda: {"module." * 1_200_000 + "x": torch.zeros(1)},
        ["more than 256 characters", "(8400001 characters)"],
    ),
    "20000 unknown keys": (
        lambda: {**_required_keys_only(), **{f"k{i}": torch.zeros(()) for i in range(20_000)}},
        ["unknown keys", "(20000 in all)", "missing weights for"],
    ),
}


@pytest.mark.parametrize("case", HOSTILE_KEY_CASES)
def test_hostile_keys_are_refused_in_bounded_time_and_memory(case, workdir, converter):
    import resource
    import time

    make, expected = HOSTILE_KEY_CASES[case]
    path = workdir / "inputs" / "hostile.pt"
    torch.save(make(), path)
    before = tree(workdir)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    start = time.perf_counter()
    code, stderr = converter(*convert_args(path, workdir / "outputs" / "out"))
    seconds = time.perf_counter() - start
    message = assert_refused(code, stderr, *expected)
    # Before: 25 s and 2.3 GB then a MemoryError (repr of the tuple), 104 s (the prefixes cut one by one).
    assert seconds < 20, f"{seconds:.1f} s"
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before < 1_000_000, "over 1 GB more memory"
    assert len(message) <= 2000
    assert tree(workdir) == before


def test_zero_element_tensors_cannot_claim_an_absurd_width(workdir, converter):
    """A few-KB file whose empty tensors claim widths in the millions: refused before anything is allocated."""
    state_dict = _required_keys_only()
    state_dict["middle.1.transformer_blocks.0.attn2.to_k.weight"] = torch.zeros(0, 1_000_000)
    state_dict["middle.1.proj_in.weight"] = torch.zeros(100_000, 0, 1, 1)
    torch.save(state_dict, workdir / "inputs" / "claims.pt")
    before = tree(workdir)
    code, stderr = converter(*convert_args(workdir / "inputs" / "claims.pt", workdir / "outputs" / "out"))
    assert_refused(code, stderr, "implausibly large", "cross_attention_dim 1000000", "transformer_inner_dim 100000")
    assert tree(workdir) == before


def test_compressed_checkpoint_that_would_expand_hugely_is_refused_before_loading(workdir, converter, monkeypatch):
    import zipfile

    bomb = workdir / "inputs" / "bomb.pt"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", b"\0" * (64 * 2**20))  # 64 MiB of zeros: ~64 KB deflated
    monkeypatch.setattr(torch, "load", pytest.fail)
    before = tree(workdir)
    code, stderr = converter(*convert_args(bomb, workdir / "outputs" / "out"))
    assert_refused(code, stderr, "compressed archive that would expand")
    assert tree(workdir) == before


def test_meta_tensor_is_refused(workdir, converter, tiny_reference):
    state_dict = lesson_state_dict(tiny_reference)
    state_dict[CONV_IN] = torch.empty(32, 1, 3, 3, device="meta")
    _save_bare(state_dict, workdir / "inputs" / "meta.pt")
    before = tree(workdir)
    assert_refused(
        *converter(*convert_args(workdir / "inputs" / "meta.pt", workdir / "outputs" / "out")), "sparse or meta"
    )
    assert tree(workdir) == before


def _write(path, payload):
    if isinstance(payload, bytes):
        path.write_bytes(payload)
    else:
        torch.save(payload, path)


FILE_CASES = {
    # id: (file name, content (bytes or an object to torch.save; None: a directory), options, message texts)
    "an empty .pt": ("empty.pt", b"", [], ["empty (0 bytes)"]),
    "a directory": ("a-folder.pt", None, [], ["is a directory"]),
    "a {'state_dict': ...} file": (
        "wrapped.pt",
        {"state_dict": {"w": torch.zeros(2)}},
        [],
        ["'model_state_dict'", "'state_dict'", "top-level keys"],
    ),
    "a pickled non-tensor global": (
        "dated.pt",
        {"model_state_dict": {}, "when": __import__("datetime").date(2024, 1, 1)},
        [],
        ["refusing to load it"],
    ),
    "random bytes": (
        "noise.pt",
        __import__("random").Random(0).randbytes(4096),
        [],
        ["could not be read as a checkpoint"],
    ),
    "an unsupported pickle opcode": ("opcode.pt", b"\x80\x02\x82\x01.", [], ["could not be read as a checkpoint"]),
    "--ema on a .safetensors": ("weights.safetensors", "safetensors", ["--ema"], ["--ema", ".safetensors"]),
}


@pytest.mark.parametrize("case", FILE_CASES)
def test_unusable_checkpoint_file_gets_a_message_about_what_it_is(case, workdir, converter, tiny_reference):
    name, content, options, expected = FILE_CASES[case]
    path = workdir / "inputs" / name
    if content is None:
        path.mkdir()
    elif content == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in lesson_state_dict(tiny_reference).items()}, path)
    else:
        _write(path, content)
    before = tree(workdir)
    message = assert_refused(*converter(*convert_args(path, workdir / "outputs" / "out", *options)), *expected)
    assert message.split(": ", 2)[-1].strip()  # a detail, not an empty one
    assert tree(workdir) == before


def test_safetensors_with_a_nan_weight_is_refused(workdir, converter, tiny_reference):
    from safetensors.torch import save_file

    state_dict = {k: v.contiguous().clone() for k, v in lesson_state_dict(tiny_reference).items()}
    state_dict["_unet.middle.0.block1.proj.weight"][0, 0, 0, 0] = float("nan")
    save_file(state_dict, workdir / "inputs" / "nan.safetensors")
    before = tree(workdir)
    code, stderr = converter(*convert_args(workdir / "inputs" / "nan.safetensors", workdir / "outputs" / "out"))
    assert_refused(code, stderr, "NaN", "middle.0.block1.proj.weight")
    assert tree(workdir) == before


def test_safetensors_with_float8_weights_is_refused_by_type(workdir, converter, tiny_reference):
    from safetensors.torch import save_file

    state_dict = {k: v.contiguous().clone() for k, v in lesson_state_dict(tiny_reference).items()}
    state_dict[CONV_IN] = state_dict[CONV_IN].to(torch.float8_e4m3fn)
    save_file(state_dict, workdir / "inputs" / "f8.safetensors")
    before = tree(workdir)
    code, stderr = converter(*convert_args(workdir / "inputs" / "f8.safetensors", workdir / "outputs" / "out"))
    assert_refused(code, stderr, "never used", "torch.float8_e4m3fn", "accepted: float32, float16, bfloat16")
    assert tree(workdir) == before


SPECIAL_FILES = {
    # id: (set-up returning the checkpoint path, texts the message must hold)
    "a named pipe (reading it would block)": (
        lambda w: (os.mkfifo(w / "inputs" / "pipe.pt"), w / "inputs" / "pipe.pt")[1],
        ["is a named pipe, not a checkpoint file"],
    ),
    "/dev/zero (reading it would never end)": (lambda w: "/dev/zero", ["/dev/zero is a character device"]),
    "a link to /dev/zero": (
        lambda w: ((w / "inputs" / "zero.pt").symlink_to("/dev/zero"), w / "inputs" / "zero.pt")[1],
        ["zero.pt is a character device"],
    ),
    "a loop of links": (
        lambda w: ((w / "inputs" / "loop.pt").symlink_to(w / "inputs" / "loop.pt"), w / "inputs" / "loop.pt")[1],
        ["cannot read the checkpoint", "loop.pt", "symbolic links"],
    ),
}


@pytest.mark.parametrize("case", SPECIAL_FILES)
def test_a_checkpoint_that_is_not_a_regular_file_is_named_for_what_it_is(case, workdir, converter):
    setup, expected = SPECIAL_FILES[case]
    path = setup(workdir)
    before = tree(workdir)
    message = assert_refused(*converter(*convert_args(path, workdir / "outputs" / "out")), *expected)
    assert "no such checkpoint file" not in message
    assert tree(workdir) == before


def test_metadata_that_is_not_a_step_and_a_loss_stays_out_of_the_model_card(workdir, converter, tiny_reference):
    """A multi-element `loss` and a `step` holding text are left out (the card says "unknown"), not pasted raw."""
    torch.save(
        {
            "step": "<script>alert(1)</script>",
            "model_state_dict": lesson_state_dict(tiny_reference),
            "loss": torch.tensor([0.1, 0.2, 0.3]),
        },
        workdir / "inputs" / "odd-meta.pt",
    )
    output = workdir / "outputs" / "out"
    assert converter(*convert_args(workdir / "inputs" / "odd-meta.pt", output))[0] == 0
    card = (output / "README.md").read_text()
    assert "training step unknown)" in card and "<script>" not in card and "loss" not in card.split("Network")[0]


def test_model_card_keeps_an_integer_step_and_a_scalar_loss(workdir, converter):
    output = workdir / "outputs" / "out"
    assert converter(*convert_args(workdir / "inputs" / "ckpt.pt", output))[0] == 0
    assert "(training step 100, loss 0.0421)" in (output / "README.md").read_text()


INJECTED_OUTPUT = 'd/x", trust_remote_code=True); __import__("os").system("touch PWNED"); ("'
INJECTED_CHECKPOINT = "ck`\n<img src=x onerror=alert(1)>``.pt"


def _card_code(card: str) -> str:
    return card.split("```py\n", 1)[1].split("\n```", 1)[0]


def _code_spans_hold(line: str, text: str) -> bool:
    """Whether every occurrence of ``text`` in ``line`` lies inside a CommonMark code span (a run of N
    backticks up to the next run of exactly N)."""
    inside, position = [], 0
    while True:
        opening = re.compile(r"`+").search(line, position)
        if opening is None:
            break
        closing = re.compile(rf"(?<!`){opening[0]}(?!`)").search(line, opening.end())
        if closing is None:
            break
        inside.append((opening.end(), closing.start()))
        position = closing.end()
    found = [m.start() for m in re.finditer(re.escape(text), line)]
    return bool(found) and all(any(a <= i and i + len(text) <= b for a, b in inside) for i in found)


def test_paths_and_names_reach_the_model_card_quoted(workdir, converter):
    """An output folder and a checkpoint named to break out of the card's code (a runnable line) and code span
    (raw HTML) appear only as quoted text: the snippet is one call with one string, the HTML sits in a span."""
    import ast

    checkpoint = workdir / "inputs" / INJECTED_CHECKPOINT
    shutil.copy(workdir / "inputs" / "ckpt.pt", checkpoint)
    output = workdir / "outputs" / INJECTED_OUTPUT
    code, stderr = converter(*convert_args(checkpoint, output))
    assert code == 0, stderr
    card = (output / "README.md").read_text()
    calls = [node for node in ast.walk(ast.parse(_card_code(card))) if isinstance(node, ast.Call)]
    loads = [call for call in calls if getattr(call.func, "attr", None) == "from_pretrained"]
    assert len(loads) == 1 and ast.literal_eval(loads[0].args[0]) == str(output)
    assert not any(getattr(call.func, "attr", None) == "system" for call in calls)
    source_line = next(line for line in card.splitlines() if line.startswith("- Source checkpoint:"))
    assert source_line.endswith("(training step 100, loss 0.0421)")  # the newline did not end the line
    assert _code_spans_hold(source_line, "<img src=x onerror=alert(1)>")
    assert not (workdir / "inputs" / "PWNED").exists()


# ================================================================= 2b. text encoders that are not what they claim


def _bert_folder(folder: Path, text_encoder_folder: Path):
    from transformers import BertConfig, BertModel

    BertModel(
        BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=1, intermediate_size=64)
    ).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(text_encoder_folder / name, folder / name)


def _truncated_weights(folder: Path, text_encoder_folder: Path):
    shutil.copytree(text_encoder_folder, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])


def _one_weight_missing(folder: Path, text_encoder_folder: Path):
    from safetensors.torch import load_file, save_file

    shutil.copytree(text_encoder_folder, folder)
    weights = load_file(folder / "model.safetensors")
    del weights[sorted(weights)[0]]
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})


def _nan_weight(folder: Path, text_encoder_folder: Path):
    from safetensors.torch import load_file, save_file

    shutil.copytree(text_encoder_folder, folder)
    weights = load_file(folder / "model.safetensors")
    name = sorted(weights)[-1]
    weights[name] = torch.full_like(weights[name], float("nan"))
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})


TEXT_ENCODER_CASES = {
    "a BERT model": (_bert_folder, ["'bert' model, not a CLIP text model"]),
    "truncated weights": (_truncated_weights, ["could not load the text encoder in"]),
    "a missing weight": (_one_weight_missing, ["not hold a complete CLIP text model", "missing"]),
    "a NaN weight": (_nan_weight, ["NaN or infinite"]),
}


@pytest.mark.parametrize("case", TEXT_ENCODER_CASES)
def test_text_encoder_that_is_not_a_complete_clip_text_model_is_refused(case, workdir, converter, text_encoder_folder):
    make, expected = TEXT_ENCODER_CASES[case]
    encoder = workdir / "inputs" / "encoder"
    make(encoder, text_encoder_folder)
    before = tree(workdir)
    args = ["--checkpoint", workdir / "inputs" / "ckpt.pt", "--output_dir", workdir / "outputs" / "out"]
    assert_refused(*converter(*args, "--text_encoder", encoder), *expected)
    assert tree(workdir) == before


@pytest.mark.parametrize("source", ["./no-such-encoder", "/no/such/encoder", "no/such/encoder"])
def test_missing_text_encoder_folder_is_named_as_a_folder(source, workdir, converter):
    before = tree(workdir)
    args = ["--checkpoint", workdir / "inputs" / "ckpt.pt", "--output_dir", workdir / "outputs" / "out"]
    message = assert_refused(*converter(*args, "--text_encoder", source), f"no text encoder folder at {source}")
    assert "repo id" not in message.lower()
    assert tree(workdir) == before


# ================================================================= 3. the Hub upload, checked before converting


def _offline(monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)


def _online_without_token(monkeypatch, tmp_path=None):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.delenv("HF_OIDC_RESOURCE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_TOKEN_PATH", "/nonexistent/token")
    monkeypatch.setattr("huggingface_hub.constants.HF_STORED_TOKENS_PATH", "/nonexistent/stored_tokens")
    monkeypatch.setattr("huggingface_hub.utils._auth._get_token_from_google_colab", lambda: None)


HUB_CASES = {
    "offline": ("someone/mnist-ddim", _offline, ["offline", "HF_HUB_OFFLINE"]),
    "no token": (
        "someone/mnist-ddim",
        _online_without_token,
        ["not logged in", "hf auth login", "huggingface-cli login", "HF_TOKEN"],
    ),
    "a malformed repo id": ("a/b/c", _offline, ["not a Hub repo id"]),
}


@pytest.mark.parametrize("case", HUB_CASES)
def test_upload_that_cannot_work_is_refused_before_converting(
    case, workdir, converter, conversion_forbidden, monkeypatch
):
    repo_id, environment, expected = HUB_CASES[case]
    environment(monkeypatch)
    before = tree(workdir)
    code, stderr = converter(
        *convert_args(workdir / "inputs" / "ckpt.pt", workdir / "outputs" / "out"), "--push_to_hub", repo_id
    )
    assert_refused(code, stderr, *expected)
    assert tree(workdir) == before


def test_failed_upload_says_where_the_saved_folder_is(workdir, converter, monkeypatch):
    import huggingface_hub

    def refuse(*args, **kwargs):
        raise RuntimeError("401 Unauthorized")

    # the uploader calls huggingface_hub.create_repo when it uploads (the name is looked up then)
    monkeypatch.setattr(huggingface_hub, "create_repo", refuse)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    output = workdir / "outputs" / "out"
    code, stderr = converter(
        *convert_args(workdir / "inputs" / "ckpt.pt", output), "--push_to_hub", "someone/mnist-ddim"
    )
    assert_refused(code, stderr, "uploading to someone/mnist-ddim failed", "401 Unauthorized", str(output))
    assert (output / "model_index.json").is_file()


# ================================================================= 4. sample_ddim.py: everything checked before sampling


SAMPLER_CASES = {
    # id: (arguments, texts the message must hold, whether the pipeline may be loaded first)
    "eta just above 1": (["--eta", "1.01"], ["--eta", "from 0", "to 1"], False),
    "eta 2": (["--eta", "2"], ["--eta"], False),
    "eta 1e6": (["--eta", "1e6"], ["--eta"], False),
    "eta NaN": (["--eta", "nan"], ["--eta", "nan"], False),
    "eta infinite": (["--eta", "inf"], ["--eta", "inf"], False),
    "eta negative": (["--eta", "-0.1"], ["--eta"], False),
    "guidance infinite": (["--guidance_scale", "inf"], ["--guidance_scale", "finite"], False),
    "guidance NaN": (["--guidance_scale", "nan"], ["--guidance_scale"], False),
    "guidance negative": (["--guidance_scale", "-0.5"], ["--guidance_scale", ">= 0"], False),
    "no steps": (["--num_inference_steps", "0"], ["--num_inference_steps"], False),
    "negative steps": (["--num_inference_steps", "-3"], ["--num_inference_steps"], False),
    "no samples": (["--num_samples", "0"], ["--num_samples"], False),
    "--text_encoder without --checkpoint": (
        ["--text_encoder", "openai/clip-vit-large-patch14"],
        ["--text_encoder applies to --checkpoint only"],
        False,
    ),
    "--ema without --checkpoint": (["--ema"], ["--ema applies to --checkpoint only"], False),
    "--compact_text_encoder without --checkpoint": (
        ["--compact_text_encoder"],
        ["--compact_text_encoder applies to --checkpoint only"],
        False,
    ),
    "both --pipeline and --checkpoint": (["--pipeline", "p", "--checkpoint", "c.pt"], ["either"], False),
    "a bogus device": (["--device", "bogus"], ["--device 'bogus' is not a device"], False),
    "the meta device": (["--device", "meta"], ["cpu, cuda or mps"], False),
    "blank prompts": (["--prompts", "  "], ["--prompts is empty"], False),
    "an output folder through a file": (["--output_dir", "notes.txt/samples"], ["notes.txt", "is a file"], False),
    "more steps than the model was trained with": (["--num_inference_steps", "5000"], ["at most 1000"], True),
    "a word the model never saw": (["--prompts", "7 eleven seven"], ["never saw: eleven;", "it knows 0, 1"], True),
}


@pytest.mark.parametrize("case", SAMPLER_CASES)
def test_sampler_refuses_bad_settings_before_sampling_or_making_a_folder(case, sampler, workdir):
    argv, expected, may_load = SAMPLER_CASES[case]
    before = tree(workdir)
    code, stderr, loaded = sampler(*argv)
    message = assert_refused(code, stderr, *expected)
    assert bool(loaded) == may_load  # what needs no model is checked before loading one
    assert tree(workdir) == before  # no output folder, not even an empty one
    if "eleven" in argv[-1]:
        assert message.count("eleven") == 1


def test_sampler_refuses_cuda_where_there_is_none(sampler, workdir, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    before = tree(workdir)
    code, stderr, loaded = sampler("--device", "cuda")
    assert_refused(code, stderr, "--device cuda", "CUDA is not available")
    assert loaded == [] and tree(workdir) == before


def test_sampler_refuses_prompts_for_a_pipeline_without_text_encoder(
    sampler, workdir, monkeypatch, unconditional_pipeline
):
    monkeypatch.setattr(
        "pipeline_mnist_ddim.tools.sample.load_pipeline", lambda settings, dtype_name=None: unconditional_pipeline
    )
    before = tree(workdir)
    assert_refused(*sampler("--prompts", "7")[:2], "no text encoder")
    assert tree(workdir) == before


def test_sampler_with_valid_settings_writes_its_four_files(sampler, workdir):
    """Guards the cases above: the same set-up with good settings samples and writes."""
    code, stderr, loaded = sampler("--prompts", "7 seven", "--eta", "1", "--guidance_scale", "2")
    assert code == 0, stderr
    written = sorted(p.name for p in (workdir / "outputs" / "samples").iterdir())
    assert written == [
        "conditional_sample_prompts.txt",
        "conditional_samples.png",
        "settings.json",
        "unconditional_samples.png",
    ]


def test_sampler_on_a_full_disk_keeps_the_earlier_run(sampler, workdir, monkeypatch):
    earlier = workdir / "outputs" / "samples"
    earlier.mkdir()
    for name in ("unconditional_samples.png", "conditional_samples.png", "settings.json"):
        (earlier / name).write_text(f"earlier {name}")

    def fill_the_disk(images, path, nrow=8):
        Path(path).write_bytes(b"\x89PNG half")
        raise OSError(errno.ENOSPC, "No space left on device", path)

    monkeypatch.setattr("pipeline_mnist_ddim.tools.sample.save_grid", fill_the_disk)
    before = tree(workdir)
    assert_refused(*sampler("--overwrite")[:2], "no space left on the device")
    assert tree(workdir) == before


TAMPERED_SCHEDULERS = {
    "a v-prediction scheduler": (lambda c: {**c, "prediction_type": "v_prediction"}, ["prediction_type"]),
    "invalid JSON": ("{not json", ["not a valid JSON file"]),
    "NaN betas": (lambda c: {**c, "trained_betas": [float("nan")] * 1000}, ["noise levels are unusable"]),
    "too few betas": (lambda c: {**c, "trained_betas": [0.01] * 10}, ["10 cumulative alphas for 1000 steps"]),
    "a text step count": (lambda c: {**c, "num_train_timesteps": "many"}, ["could not be loaded as a pipeline"]),
}


@pytest.fixture(scope="module")
def saved_unconditional_folder(tiny_unet, tmp_path_factory):
    from pipeline_mnist_ddim.lesson.schedulers import lesson_ddim_scheduler
    from pipeline_mnist_ddim.pipeline_mnist_ddim import MNISTDDIMPipeline

    folder = tmp_path_factory.mktemp("saved") / "pipe"
    MNISTDDIMPipeline(unet=tiny_unet, scheduler=lesson_ddim_scheduler()).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("case", TAMPERED_SCHEDULERS)
def test_sampler_refuses_a_tampered_scheduler_config(case, saved_unconditional_folder, workdir, capsys, monkeypatch):
    monkeypatch.setenv("HF_MODULES_CACHE", str(workdir.parent / "hf_modules"))
    edit, expected = TAMPERED_SCHEDULERS[case]
    folder = workdir / "outputs" / "tampered"
    shutil.copytree(saved_unconditional_folder, folder)
    config_path = folder / "scheduler" / "scheduler_config.json"
    config_path.write_text(edit if isinstance(edit, str) else json.dumps(edit(json.loads(config_path.read_text()))))
    before = tree(workdir)
    code = command_module("sample_ddim").main(
        [
            "--pipeline",
            str(folder),
            "--output_dir",
            str(workdir / "outputs" / "samples"),
            "--num_samples",
            "2",
            "--num_inference_steps",
            "2",
        ]
    )
    assert_refused(code, capsys.readouterr().err, *expected)
    assert tree(workdir) == before


# ================================================================= 5. the other scripts


def test_benchmark_refuses_a_bogus_device(capsys):
    assert_refused(command_module("benchmark").main(["--device", "bogus"]), capsys.readouterr().err, "not a device")


@pytest.mark.parametrize(
    "script, argv",
    [
        ("evaluate", ["--quick"]),
        ("interpolate", []),
        ("train_lesson5e", ["--num_training_steps", "1"]),
    ],
)
def test_long_running_scripts_refuse_an_impossible_output_folder_before_working(script, argv, workdir, capsys):
    before = tree(workdir)
    code = command_module(script).main([*argv, "--output_dir", str(workdir / "inputs" / "notes.txt" / "out")])
    assert_refused(code, capsys.readouterr().err, "notes.txt", "is a file")
    assert tree(workdir) == before


# ================================================================= 6. error lines are safe to print on a terminal

# ESC (colours, screen clears), CR (overwrites the line), C1 CSI, DEL, a bidi override, a line separator,
# a zero-width joiner, and the undecodable byte 0xFF of a file name.
HOSTILE_TEXT = "\x1b[2J\x1b[31mRED\r\x9b1m\x7f\u202eevil\u2028\u200d" + os.fsdecode(b"\xff")
VISIBLE_ESCAPES = ["\\x1b[2J\\x1b[31mRED\\x0d\\x9b1m\\x7f\\u202eevil\\u2028\\u200d\\udcff"]


def _assert_terminal_safe(message: str) -> None:
    import unicodedata

    lines = message.split("\n")  # the line ends themselves are fine; nothing else of category C or Z[lp] is
    unsafe = [ch for line in lines for ch in line if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp")]
    assert not unsafe, f"raw control characters {unsafe!r} in {message!r}"


ESCAPE_CASES = {
    # id: (converter arguments given the working folder, texts the message must hold)
    "a missing checkpoint's name": (
        lambda w: convert_args(w / "inputs" / f"{HOSTILE_TEXT}.pt", w / "outputs" / "out"),
        ["no such checkpoint file", *VISIBLE_ESCAPES],
    ),
    "an output folder's name": (
        lambda w: convert_args(w / "inputs" / "ckpt.pt", w / "outputs" / "keep.txt" / HOSTILE_TEXT / "out"),
        ["is a file", *VISIBLE_ESCAPES],
    ),
    "a text encoder folder's name": (
        lambda w: [
            *convert_args(w / "inputs" / "ckpt.pt", w / "outputs" / "out")[:-2],
            "--text_encoder",
            f"./{HOSTILE_TEXT}",
        ],
        ["no text encoder folder", *VISIBLE_ESCAPES],
    ),
    "a usage error (argparse)": (
        lambda w: [*convert_args(w / "inputs" / "ckpt.pt", w / "outputs" / "out"), "--dtype", HOSTILE_TEXT],
        ["--dtype", "\\x1b[2J"],
    ),
}


@pytest.mark.parametrize("case", ESCAPE_CASES)
def test_error_lines_show_control_characters_as_escapes(case, workdir, convert_script, capsys):
    arguments, expected = ESCAPE_CASES[case]
    before = tree(workdir)
    try:
        code = convert_script.main([str(a) for a in arguments(workdir)])
    except SystemExit as exit:  # argparse's usage errors exit from the parser
        code = exit.code
    stderr = capsys.readouterr().err
    errors = [line for line in stderr.splitlines() if "error: " in line]
    assert code == 2 and len(errors) == 1, stderr
    _assert_terminal_safe(stderr)
    for text in expected:
        assert text in errors[0], f"{text!r} not in {errors[0]!r}"
    assert tree(workdir) == before


def test_sampler_prompt_with_terminal_escapes_is_shown_escaped(sampler, workdir):
    code, stderr, _ = sampler("--prompts", "7 \x1b[2J\u202e")
    assert_refused(code, stderr, "never saw", "\\x1b[2j\\u202e")  # prompts are read lower-cased
    _assert_terminal_safe(stderr)


def test_every_error_line_is_one_bounded_line():
    from pipeline_mnist_ddim.conversion.errors import MAX_ERROR_CHARS, error_line

    message = HOSTILE_TEXT * 1000 + "x" * 10_000_000
    line = error_line(message)
    assert len(line) <= MAX_ERROR_CHARS + len("error: ") and f"({len(message)} characters in all)" in line
    assert line.startswith("error: " + VISIBLE_ESCAPES[0])
    _assert_terminal_safe(line)
    assert error_line("two\nlines") == "error: two\\x0alines"
