"""The web demo (logic of ``scripts/demo.py``): ``limits`` (inputs and caps), ``work`` (the requests, no Gradio), ``app`` (the page): sample, invert and interpolate digits in a browser.

Three tabs on one pipeline, built with Gradio (imported lazily: the core install does not need it):

- **Sample**: prompts, images per prompt, steps S, eta, guidance, negative prompt, seed, scheduler;
  a gallery captioned with each image's prompt, progress "step k of S" from `callback_on_step_end`,
  and the Python call that reproduces the gallery exactly.
- **Invert**: a drawn or uploaded digit, encoded to its DDIM latent x_T with `pipe.invert` and
  decoded back, for several S side by side with the reconstruction error.
- **Interpolate**: a slerp strip between two seeds' latents, or between two prompts at one latent.

The functions below take plain Python values and raise `DemoInputError` (a `ValueError`) on bad
input; the Gradio handlers turn that into `gr.Error`, a readable message in the page. Every event
shares one queue (``concurrency_id="pipeline"``) limited to `DemoLimits.concurrency` jobs at a time,
and each request is capped in size (images x steps), in wall time (`DemoLimits.max_seconds`, checked at
every step) and per client (`DemoLimits.max_client_requests` started per `client_window` seconds, so
that one visitor filling the queue is refused as each of their jobs comes up, in no time). Uploads are
capped in bytes (Gradio's ``max_file_size``) and pixels (PIL's decompression-bomb limit), and an
uploaded image is shrunk before it is converted to float32.
"""
