"""The web demo as an app and a script: one limited queue, the command's defaults and refusals, and the
limits per upload, per request and per visitor (issue 18, item 7); its functions: test_demo.py."""

import sys
import time

import numpy as np
import pytest
from demo_requests import STEPS, drawn_digit, request

from pipeline_mnist_ddim.tools.commands import demo as demo_command
from pipeline_mnist_ddim.tools.demo.app import GradioHandlers, build_demo
from pipeline_mnist_ddim.tools.demo.images import digit_from_image
from pipeline_mnist_ddim.tools.demo.limits import DemoInputError, DemoLimits
from pipeline_mnist_ddim.tools.demo.work import MNISTDemo


pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- the app and the script


def test_app_queues_every_event_on_one_limited_queue(tiny_pipeline):
    blocks = build_demo(tiny_pipeline, limits=DemoLimits(concurrency=1))
    functions = [fn for fn in blocks.fns.values() if fn.name in ("sample", "invert", "interpolate")]
    assert len(functions) == 3
    assert {(fn.concurrency_id, fn.concurrency_limit) for fn in functions} == {("pipeline", 1)}
    assert any(getattr(button, "value", None) == "Generate" for button in blocks.blocks.values())
    assert blocks.analytics_enabled is False


def test_script_without_gradio_says_how_to_install_it(monkeypatch, capsys):
    script = demo_command
    monkeypatch.setitem(sys.modules, "gradio", None)  # makes `import gradio` raise ImportError
    assert script.main([]) == 2
    assert capsys.readouterr().err.strip() == "error: the demo needs Gradio: pip install -e '.[demo]'"


def test_script_refuses_a_missing_pipeline_folder(tmp_path, capsys):
    script = demo_command
    assert script.main(["--pipeline", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.startswith("error: no pipeline folder at")


def test_script_defaults_are_the_documented_caps():
    args = demo_command.parse_args([])
    assert (args.host, args.port, args.share, args.device, args.dtype) == ("127.0.0.1", 7860, False, "auto", "float32")
    assert (args.concurrency_limit, args.max_images, args.max_image_steps) == (1, 32, 2000)
    assert (args.max_seconds, args.max_client_requests) == (DemoLimits().max_seconds, DemoLimits().max_client_requests)
    assert DemoLimits() == DemoLimits(max_images=32, max_image_steps=2000, max_frames=16, concurrency=1, max_queue=16)


# ---------------------------------------------------------------- limits (issue 18, item 7)


def test_large_upload_is_shrunk_before_it_becomes_float32():
    """A 3000x3000 RGBA upload is 144 MB as float32; shrunk first, the conversion stays under a few MB."""
    import tracemalloc

    from PIL import Image

    small = drawn_digit()["composite"]
    big = Image.fromarray(small).resize((3000, 3000), Image.NEAREST)
    expected = digit_from_image(small)
    for upload in (big, np.asarray(big)):  # as Gradio gives it with type="pil", and as an array
        tracemalloc.start()
        digit = digit_from_image({"background": None, "layers": [], "composite": upload})
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 16 * 2**20, peak  # numpy's allocations are traced
        assert digit.shape == (1, 1, 32, 32)
        # the same digit, drawn larger (bilinear shrinking may move an edge by a pixel)
        assert (digit - expected).abs().mean() < 0.1 and abs(digit.sum() / expected.sum() - 1) < 0.05


def test_upload_over_the_pixel_cap_is_refused_before_decoding(tiny_pipeline, tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after the test
    build_demo(tiny_pipeline, limits=DemoLimits(max_upload_pixels=1000 * 1000))
    Image.new("L", (1000, 1000)).save(tmp_path / "ok.png")
    Image.new("L", (1001, 1001)).save(tmp_path / "bomb.png")  # a few kB of PNG
    with Image.open(tmp_path / "ok.png") as image:
        image.load()
    with pytest.raises(Image.DecompressionBombError):
        Image.open(tmp_path / "bomb.png")  # the size in the header is enough: nothing decoded


def test_launch_passes_the_upload_size_limit(tiny_pipeline, monkeypatch):
    from pipeline_mnist_ddim.tools.demo.app import launch

    blocks = build_demo(tiny_pipeline, limits=DemoLimits(max_upload_bytes=12345))
    seen = {}
    monkeypatch.setattr(type(blocks), "launch", lambda self, **kwargs: seen.update(kwargs))
    launch(blocks, block=False)
    assert seen["max_file_size"] == 12345
    assert DemoLimits().max_upload_bytes == 5 * 1024 * 1024


@pytest.mark.parametrize("tab", ["sample", "invert", "interpolate"])
def test_request_over_its_wall_time_is_stopped(tab, tiny_pipeline):
    demo = MNISTDemo(tiny_pipeline, limits=DemoLimits(max_seconds=0))
    with pytest.raises(DemoInputError, match="stopped after 0 s, this demo's limit per request"):
        if tab == "sample":
            demo.sample(request(demo))
        elif tab == "invert":
            demo.invert(*demo.inversion_request(drawn_digit(), "", [10]))
        else:
            demo.interpolate(demo.interpolation_request("seeds", 0, 1, "", "", 2, STEPS))


def test_client_limiter_counts_requests_per_client_in_a_window():
    from pipeline_mnist_ddim.tools.demo.limits import ClientLimiter

    now = [0.0]
    limiter = ClientLimiter(max_requests=2, window=60, clock=lambda: now[0])
    for _ in range(2):
        with limiter.admit("1.2.3.4"):
            pass
    with pytest.raises(DemoInputError, match="at most 2 requests per visitor every 60 s: try again in 60 s"):
        with limiter.admit("1.2.3.4"):
            pass
    with limiter.admit("5.6.7.8"):  # another client is not affected
        with pytest.raises(DemoInputError, match="still running"):  # one at a time per client
            with limiter.admit("5.6.7.8"):
                pass
    for _ in range(5):
        with limiter.admit(None):  # calls from Python: not limited
            pass
    now[0] = 60.0
    with limiter.admit("1.2.3.4"):  # the window has passed
        pass


def test_one_client_filling_the_queue_gets_each_surplus_job_refused_at_once(tiny_pipeline):
    import gradio as gr

    demo = MNISTDemo(tiny_pipeline, limits=DemoLimits(max_client_requests=2, client_window=600))
    handlers = GradioHandlers(demo)
    for _ in range(2):
        handlers.sample("7", 1, STEPS, 0.0, 1.0, "", 0, "DDIM", client="10.0.0.1")
    started = time.perf_counter()
    for _ in range(14):  # the rest of a 16-job flood
        with pytest.raises(gr.Error, match="at most 2 requests per visitor"):
            handlers.sample("7", 1, STEPS, 0.0, 1.0, "", 0, "DDIM", client="10.0.0.1")
    assert time.perf_counter() - started < 5  # no sampling: the queue drains at once
    gallery, _ = handlers.sample("7", 1, STEPS, 0.0, 1.0, "", 0, "DDIM", client="10.0.0.2")
    assert len(gallery) == 1


def test_served_app_passes_the_client_to_the_per_client_cap(tiny_pipeline):
    from gradio_client import Client

    from pipeline_mnist_ddim.tools.demo.app import launch

    blocks = build_demo(tiny_pipeline, limits=DemoLimits(max_client_requests=1, client_window=600))
    launch(blocks, host="127.0.0.1", port=None, block=False)
    try:
        client = Client(blocks.local_url, verbose=False)
        arguments = ("7", 1, STEPS, 0.0, 1.0, "", 0, "DDIM")
        gallery, code = client.predict(*arguments, api_name="/sample")
        assert len(gallery) == 1 and "manual_seed(0)" in code
        with pytest.raises(Exception, match="at most 1 requests per visitor"):
            client.predict(*arguments, api_name="/sample")
    finally:
        blocks.close()
