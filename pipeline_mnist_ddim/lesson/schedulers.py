"""The schedulers that reproduce Lesson 6 (DDIM) and Lesson 5 (DDPM Algorithm 2) exactly."""

from diffusers import DDIMScheduler, DDPMScheduler

from pipeline_mnist_ddim.lesson import NUM_TRAIN_TIMESTEPS, lesson_betas


def _lesson_settings() -> dict:
    return dict(
        num_train_timesteps=NUM_TRAIN_TIMESTEPS,
        # The lesson builds its linspace in float64 and casts to float32; diffusers' float32
        # "linear" schedule differs by ~2e-4 in the images after 50 steps.
        trained_betas=lesson_betas().tolist(),
        prediction_type="epsilon",
        clip_sample=False,  # the stock True breaks parity completely
        timestep_spacing="leading",  # range(0, 1000, 1000 // S), as Lesson 6
        steps_offset=0,
    )


def lesson_ddim_scheduler() -> DDIMScheduler:
    """Lesson 6: S steps of `range(0, 1000, 1000 // S)`, the last one to alpha-bar = 1."""
    return DDIMScheduler(**_lesson_settings(), set_alpha_to_one=True)


def lesson_ddpm_scheduler() -> DDPMScheduler:
    """Lesson 5's Algorithm 2 with sigma^2 = beta ("fixed large"); use 1000 inference steps."""
    return DDPMScheduler(**_lesson_settings(), variance_type="fixed_large")
