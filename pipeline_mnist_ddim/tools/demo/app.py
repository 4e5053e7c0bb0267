"""The web demo's page: Gradio (imported lazily), its handlers, per-client limits and the server."""

import os
from typing import Optional

from PIL import Image

from pipeline_mnist_ddim.tools.arguments import MAX_STEPS
from pipeline_mnist_ddim.tools.demo.images import latent_to_display, strip, to_display
from pipeline_mnist_ddim.tools.demo.limits import (
    GUIDANCE_SLIDER_MAX,
    INVERSION_STEPS,
    QUEUE_ID,
    SCHEDULERS,
    DemoLimits,
)
from pipeline_mnist_ddim.tools.demo.work import MNISTDemo


# ---------------------------------------------------------------------------- Gradio


def import_gradio():
    """Gradio, with its usage analytics (network calls) off; a clear message when it is not installed."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio
    except ImportError as err:
        raise ImportError("the demo needs Gradio: pip install -e '.[demo]'") from err
    return gradio


INTRO = """# MNIST DDIM: Lesson 5e's digits, sampled with Lesson 6's DDIM in diffusers
Type digits as words or numerals ("7 seven 3"; empty: unconditional) and press **Generate**.
With eta = 0, DDIM is deterministic: the same seed gives the same digits at any step count S.
"""


class GradioHandlers:
    """The events' functions: `MNISTDemo`'s work with Gradio's progress, bad input as `gr.Error`."""

    def __init__(self, demo: MNISTDemo):
        self.demo, self.gr = demo, import_gradio()

    @staticmethod
    def reporter(progress):
        if progress is None:
            return None
        return lambda step, total: progress((step, total), desc=f"step {step} of {total}")

    def error(self, err: Exception):
        return self.gr.Error(str(err), print_exception=False)

    def sample(
        self, prompt_text, per_prompt, steps, eta, guidance, negative, seed, scheduler, progress=None, client=None
    ):
        """-> (gallery of (image, prompt), reproduction code)"""
        try:
            request = self.demo.sample_request(
                prompt_text, per_prompt, steps, eta, guidance, negative, seed, scheduler
            )
            with self.demo.clients.admit(client):
                images = self.demo.sample(request, self.reporter(progress))
        except ValueError as err:  # ours, or the pipeline's own checks: a message in the page
            raise self.error(err) from err
        return list(zip(to_display(images), request.captions())), self.demo.reproduction_code(request)

    def invert(self, image, prompt_text, steps, progress=None, client=None):
        """-> (gallery: the input, then per S its latent and reconstruction; a Markdown table of MSE by S)"""
        try:
            digit, prompt, steps = self.demo.inversion_request(image, prompt_text, steps)
            with self.demo.clients.admit(client):
                results = self.demo.invert(digit, prompt, steps, self.reporter(progress))
        except ValueError as err:
            raise self.error(err) from err
        gallery = [(to_display(digit)[0], "input (32x32, as MNIST)")]
        rows = ["| S | reconstruction MSE |", "|---:|---:|"]
        for r in results:
            gallery.append((to_display(latent_to_display(r["latent"]))[0], f"S={r['steps']}: latent x_T"))
            gallery.append((to_display(r["reconstruction"])[0], f"S={r['steps']}: reconstruction, MSE {r['mse']:.5f}"))
            rows.append(f"| {r['steps']} | {r['mse']:.6f} |")
        return gallery, "\n".join(rows)

    def interpolate(self, mode, seed_a, seed_b, prompt_a, prompt_b, frames, steps, progress=None, client=None):
        """-> the strip, one PIL image"""
        try:
            request = self.demo.interpolation_request(mode, seed_a, seed_b, prompt_a, prompt_b, frames, steps)
            with self.demo.clients.admit(client):
                images = self.demo.interpolate(request)
        except ValueError as err:
            raise self.error(err) from err
        return strip(images)


def client_of(request) -> Optional[str]:
    """The client's address as the server saw it (behind a proxy, the proxy's; then the session)."""
    if request is None:
        return None
    host = getattr(getattr(request, "client", None), "host", None)
    return host or getattr(request, "session_hash", None)


def limit_decoded_images(max_pixels: int) -> None:
    """Makes PIL refuse to decode images over ``max_pixels`` (Gradio decodes uploads before our code runs).

    PIL raises `DecompressionBombError` above twice ``Image.MAX_IMAGE_PIXELS`` (below that it only warns,
    and Gradio silences the warning), hence half. Process-wide; it only ever lowers PIL's limit.
    """
    half = max(1, max_pixels // 2)
    if Image.MAX_IMAGE_PIXELS is None or Image.MAX_IMAGE_PIXELS > half:
        Image.MAX_IMAGE_PIXELS = half


def build_demo(pipe, source: Optional[str] = None, limits: DemoLimits = DemoLimits(), device: Optional[str] = None):  # noqa: B008 (frozen)
    """The Gradio app (a `gr.Blocks`, queued) around ``pipe``; launch it with `launch`."""
    gr = import_gradio()
    limit_decoded_images(limits.max_upload_pixels)
    demo = MNISTDemo(pipe, source, limits, device)
    handlers = GradioHandlers(demo)
    events = dict(concurrency_limit=limits.concurrency, concurrency_id=QUEUE_ID)

    # Gradio hands a progress tracker to functions with a `gr.Progress()` default argument, and the
    # request (the client's address) to a parameter annotated `gr.Request`.
    def sample(
        prompt_text,
        per_prompt,
        steps,
        eta,
        guidance,
        negative,
        seed,
        scheduler,
        request: gr.Request,
        progress=gr.Progress(),  # noqa: B008
    ):
        arguments = (prompt_text, per_prompt, steps, eta, guidance, negative, seed, scheduler)
        return handlers.sample(*arguments, progress, client=client_of(request))

    def invert(image, prompt_text, steps, request: gr.Request, progress=gr.Progress()):  # noqa: B008
        return handlers.invert(image, prompt_text, steps, progress, client=client_of(request))

    def interpolate(
        mode,
        seed_a,
        seed_b,
        prompt_a,
        prompt_b,
        frames,
        steps,
        request: gr.Request,
        progress=gr.Progress(track_tqdm=True),  # noqa: B008
    ):
        arguments = (mode, seed_a, seed_b, prompt_a, prompt_b, frames, steps)
        return handlers.interpolate(*arguments, progress, client=client_of(request))

    if pipe.text_encoder is None:
        words = "none: this pipeline has no text encoder, leave it empty"
    else:
        words = " ".join(demo.accepted_words) if demo.accepted_words else "any the text encoder takes"
    with gr.Blocks(title="MNIST DDIM (diffusers)", analytics_enabled=False) as blocks:
        gr.Markdown(INTRO)
        with gr.Tab("Sample"):
            with gr.Row():
                with gr.Column(scale=1):
                    prompt = gr.Textbox(
                        value="7 seven 3" if pipe.text_encoder is not None else "",
                        label="Prompts",
                        info=f"one image set per word; words: {words}",
                        elem_id="prompt",
                    )
                    per_prompt = gr.Slider(
                        1, limits.max_images, value=2, step=1, label="Images per prompt", elem_id="images-per-prompt"
                    )
                    steps = gr.Slider(1, MAX_STEPS, value=50, step=1, label="Steps S", elem_id="steps")
                    eta = gr.Slider(0, 1, value=0, step=0.05, label="eta (DDIM: 0 deterministic, 1 DDPM-like)")
                    guidance = gr.Slider(1, GUIDANCE_SLIDER_MAX, value=1, step=0.5, label="Guidance scale (1: none)")
                    negative = gr.Textbox(
                        label="Negative prompt", info="with guidance above 1: a digit to steer away from"
                    )
                    seed = gr.Number(value=42, precision=0, label="Seed", minimum=0)
                    scheduler = gr.Dropdown(list(SCHEDULERS), value="DDIM", label="Scheduler")
                    generate = gr.Button("Generate", variant="primary", elem_id="generate")
                with gr.Column(scale=2):
                    gallery = gr.Gallery(
                        label="Samples", columns=6, format="png", object_fit="contain", elem_id="samples"
                    )
                    code = gr.Code(language="python", label="Python that reproduces these images", elem_id="code")
            generate.click(
                sample,
                [prompt, per_prompt, steps, eta, guidance, negative, seed, scheduler],
                [gallery, code],
                **events,
            )
        with gr.Tab("Invert"):
            with gr.Row():
                with gr.Column(scale=1):
                    # White ink on black, as MNIST; any other drawing or upload is converted by `digit_from_image`.
                    sketch = gr.Sketchpad(
                        value=Image.new("RGB", (280, 280)),
                        label="Draw a digit (or upload one)",
                        sources=("upload",),
                        canvas_size=(280, 280),
                        type="pil",  # shrunk as PIL before it becomes an array
                        image_mode="RGBA",
                        elem_id="sketchpad",
                        brush=gr.Brush(
                            default_size=20, colors=["#ffffff"], default_color="#ffffff", color_mode="fixed"
                        ),
                    )
                    invert_prompt = gr.Textbox(label="Prompt (optional)", info="the digit drawn; empty: unconditional")
                    invert_steps = gr.CheckboxGroup(
                        list(INVERSION_STEPS), value=[10, 50, 100], label="Steps S", elem_id="invert-steps"
                    )
                    invert_button = gr.Button("Invert and reconstruct", variant="primary")
                with gr.Column(scale=2):
                    invert_gallery = gr.Gallery(
                        label="Latent x_T and reconstruction per S",
                        columns=2,
                        format="png",
                        object_fit="contain",
                        elem_id="invert-gallery",
                    )
                    invert_table = gr.Markdown()
            invert_button.click(
                invert, [sketch, invert_prompt, invert_steps], [invert_gallery, invert_table], **events
            )
        with gr.Tab("Interpolate"):
            with gr.Row():
                with gr.Column(scale=1):
                    mode = gr.Radio(["seeds", "prompts"], value="seeds", label="Between two")
                    seed_a = gr.Number(value=0, precision=0, label="Seed A (the latent, for prompts)", minimum=0)
                    seed_b = gr.Number(value=1, precision=0, label="Seed B", minimum=0)
                    prompt_a = gr.Textbox(label="Prompt A", info="seeds: optional prompt for the whole strip")
                    prompt_b = gr.Textbox(label="Prompt B", info="prompts only")
                    frames = gr.Slider(2, limits.max_frames, value=8, step=1, label="Frames")
                    interpolate_steps = gr.Slider(1, MAX_STEPS, value=50, step=1, label="Steps S")
                    interpolate_button = gr.Button("Interpolate", variant="primary")
                with gr.Column(scale=2):
                    strip_image = gr.Image(label="Slerp strip", format="png", type="pil")
            interpolate_button.click(
                interpolate,
                [mode, seed_a, seed_b, prompt_a, prompt_b, frames, interpolate_steps],
                strip_image,
                **events,
            )
    blocks.queue(default_concurrency_limit=limits.concurrency, max_size=limits.max_queue)
    blocks.demo_limits = limits  # for `launch`: the upload limit is a launch option in Gradio
    return blocks


def theme():
    """Gradio's default theme with system fonts: the page loads nothing from font CDNs (it works offline)."""
    gr = import_gradio()
    sans = ["ui-sans-serif", "system-ui", "sans-serif"]
    return gr.themes.Default(font=sans, font_mono=["ui-monospace", "Consolas", "monospace"])


def launch(
    blocks, host: Optional[str] = "127.0.0.1", port: Optional[int] = 7860, share: bool = False, block: bool = True
):
    """Serves the app; ``host``/``port`` None: Gradio's own defaults (``GRADIO_SERVER_NAME``/``PORT``, as on
    Spaces). With ``block=False`` returns at once (the server keeps running in a thread)."""
    return blocks.launch(
        server_name=host,
        server_port=port,
        share=share,
        theme=theme(),
        prevent_thread_lock=not block,
        show_error=False,
        max_file_size=getattr(blocks, "demo_limits", DemoLimits()).max_upload_bytes,
        quiet=not block,
        footer_links=[],
    )
