"""The web demo in a real browser: headless Chromium (Debian's `chromium`) driven by Playwright's Python API.

The app runs on a free local port on the tiny pipeline (3 steps); every request to another host
is blocked and recorded, so the page is shown to work offline. Set DEMO_SCREENSHOT=docs/demo.png
to run it on the embedded default at its 50 steps and keep the screenshot for the README.
"""

import os
import shutil
import socket

import pytest

from pipeline_mnist_ddim.conversion.folders import load_pipeline_folder
from pipeline_mnist_ddim.lesson.schedulers import lesson_ddim_scheduler
from pipeline_mnist_ddim.pipeline_mnist_ddim import MNISTDDIMPipeline
from pipeline_mnist_ddim.tools.demo.app import build_demo, launch


pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]  # a served app and a browser

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = os.environ.get("DEMO_SCREENSHOT")
TIMEOUT_MS = 240_000 if SCREENSHOT else 60_000  # the embedded default at 50 steps on a 2-core CPU takes a while


def chromium_executable() -> str:
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("no Chromium found: install Debian's package (apt-get install -y chromium) or set CHROMIUM=/path")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(tiny_unet, tiny_text_encoder):
    if SCREENSHOT:
        pipe = load_pipeline_folder()
    else:
        text_encoder, tokenizer = tiny_text_encoder
        pipe = MNISTDDIMPipeline(
            unet=tiny_unet, scheduler=lesson_ddim_scheduler(), text_encoder=text_encoder, tokenizer=tokenizer
        )
    blocks = build_demo(pipe)
    _, url, _ = launch(blocks, port=free_port(), block=False)
    yield url
    blocks.close()


@pytest.fixture(scope="module")
def browser_page(app_url, tmp_path_factory):
    """The app's page in headless Chromium; ``page.external_requests`` lists what was blocked."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=chromium_executable(),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        external = []

        def local_only(route):
            url = route.request.url
            if url.startswith(app_url.rstrip("/")) or url.startswith(("data:", "blob:")):
                route.continue_()
            else:
                external.append(url)
                route.abort()

        context.route("**/*", local_only)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(app_url)
        page.external_requests = external
        yield page
        context.close()


def set_number(page, elem_id: str, value: int):
    field = page.locator(f"#{elem_id} input[type=number]")
    field.fill(str(value))
    field.press("Enter")


def test_generate_shows_one_captioned_image_per_requested_sample(browser_page, tmp_path):
    from playwright.sync_api import expect

    page = browser_page
    page.locator("#prompt textarea").fill("7 seven 3")
    set_number(page, "images-per-prompt", 4 if SCREENSHOT else 2)
    if not SCREENSHOT:
        set_number(page, "steps", 3)
    page.get_by_role("button", name="Generate", exact=True).click()
    thumbnails = page.locator("#samples .thumbnail-item")
    expected = ["7", "seven", "3"]
    per_prompt = 4 if SCREENSHOT else 2
    expect(thumbnails).to_have_count(len(expected) * per_prompt, timeout=TIMEOUT_MS)
    captions = page.locator("#samples .caption-label").all_inner_texts()
    assert captions == [prompt for prompt in expected for _ in range(per_prompt)]
    expect(page.locator("#code")).to_contain_text("prompt=['7', 'seven', '3']")
    page.screenshot(path=SCREENSHOT or str(tmp_path / "demo.png"), full_page=True)


def test_unknown_word_shows_the_error_message_in_the_page(browser_page):
    from playwright.sync_api import expect

    page = browser_page
    page.locator("#prompt textarea").fill("7 eight8")
    page.get_by_role("button", name="Generate", exact=True).click()
    expect(page.get_by_text("unknown word 'eight8'", exact=False).first).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.get_by_text("Traceback")).to_have_count(0)


def test_drawn_digit_is_inverted_and_reconstructed(browser_page):
    from playwright.sync_api import expect

    page = browser_page
    page.get_by_role("tab", name="Invert").click()
    page.get_by_role("button", name="Brush").click()
    canvas = page.locator("#sketchpad canvas").first.bounding_box()
    x, top, height = canvas["x"] + canvas["width"] / 2, canvas["y"] + canvas["height"] * 0.2, canvas["height"] * 0.6
    page.mouse.move(x, top)
    page.mouse.down()
    for i in range(1, 11):  # a "1", top to bottom
        page.mouse.move(x, top + height * i / 10)
    page.mouse.up()
    for s in ("50", "100"):  # keep S = 10 only
        page.locator("#invert-steps").get_by_label(s, exact=True).uncheck()
    page.get_by_role("button", name="Invert and reconstruct").click()
    captions = page.locator("#invert-gallery .caption-label")
    expect(captions).to_have_count(3, timeout=TIMEOUT_MS)
    texts = captions.all_inner_texts()
    assert texts[:2] == ["input (32x32, as MNIST)", "S=10: latent x_T"] and texts[2].startswith(
        "S=10: reconstruction, MSE 0."
    )
    page.get_by_role("tab", name="Sample").click()


def test_page_loads_nothing_from_other_hosts(browser_page):
    assert browser_page.external_requests == []
