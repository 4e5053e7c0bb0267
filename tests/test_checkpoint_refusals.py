"""Every way a checkpoint is refused: a file the converter cannot use (unreadable, hostile, not a regular
file) or one that would sample garbage (NaN, wrong types, impossible widths) ends in one `error:` line naming
the file or the tensors, exit code 2, in bounded time and memory, and nothing written or lost.
"""

import os
from pathlib import Path

import pytest
import torch
from conftest import assert_refused, convert_args, lesson_state_dict, tree


pytestmark = pytest.mark.usefixtures("one_thread")


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
    "another network's state dict": (lambda sd: torch.nn.Linear(3, 3).state_dict(), ["Lesson 5e"]),
    "a tensor of the wrong shape": (
        _with("_unet.downs.1.0.block1.proj.weight", torch.zeros(64, 32, 3, 1)),
        ["downs.1.0.block1.proj.weight", "(64, 32, 3, 1)"],
    ),
    "an unknown extra key": (lambda sd: {**sd, "_unet.downs.0.9.weight": torch.zeros(3)}, ["downs.0.9.weight"]),
    "a missing key": (  # reported under its diffusers name
        lambda sd: {k: v for k, v in sd.items() if k != "_unet.ups.2.5.proj_out.bias"},
        ["missing", "up_blocks.2.attentions.2.proj_out.bias"],
    ),
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
        ["noise.pt", "could not be read as a checkpoint"],
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


def test_truncated_checkpoint_is_refused(workdir, converter):
    data = (workdir / "inputs" / "ckpt.pt").read_bytes()
    truncated = workdir / "inputs" / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    before = tree(workdir)
    assert_refused(*converter(*convert_args(truncated, workdir / "outputs" / "out")), "truncated.pt", "truncated")
    assert tree(workdir) == before


class RunsCodeWhenUnpickled:
    """Pickles as a call to os.makedirs(marker): loading it unsafely would create the marker folder."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.makedirs, (str(self.marker),)


def test_pickle_that_would_run_code_is_refused_without_running_it(workdir, converter):
    marker = workdir / "code-ran"
    malicious = workdir / "inputs" / "malicious.pt"
    torch.save({"step": 1, "model_state_dict": RunsCodeWhenUnpickled(marker)}, malicious)
    before = tree(workdir)
    assert_refused(*converter(*convert_args(malicious, workdir / "outputs" / "out")), "refusing")
    assert tree(workdir) == before  # the marker folder included


def test_malicious_pickle_really_runs_code_when_loaded_unsafely(tmp_path):
    """Guards the test above: its payload is live, so 'marker absent' means the converter refused it."""
    marker = tmp_path / "code-ran"
    malicious = tmp_path / "malicious.pt"
    torch.save({"model_state_dict": RunsCodeWhenUnpickled(marker)}, malicious)
    torch.load(malicious, weights_only=False)
    assert marker.is_dir()


def test_read_checkpoint_raises_checkpoint_error_on_unreadable_files(tmp_path):
    from pipeline_mnist_ddim.conversion.checkpoint import CheckpointError, read_checkpoint

    noise = tmp_path / "noise.pt"
    noise.write_bytes(__import__("random").Random(1).randbytes(512))
    with pytest.raises(CheckpointError):
        read_checkpoint(str(noise))
