"""The lesson's fixed facts that need no torch: its schedule's length, its twenty prompts, its text encoder.

Lesson 5e trains on linear betas over 1000 steps, prompts each digit as its word or its numeral
("seven" or "7") and encodes prompts with CLIP ViT-L/14. Torch-free, so that the command-line tools
can name them before torch is imported.
"""

NUM_TRAIN_TIMESTEPS = 1000
TEXT_LABELS = (
    ("zero", "0"),
    ("one", "1"),
    ("two", "2"),
    ("three", "3"),
    ("four", "4"),
    ("five", "5"),
    ("six", "6"),
    ("seven", "7"),
    ("eight", "8"),
    ("nine", "9"),
)
LESSON_PROMPTS = tuple(word for pair in TEXT_LABELS for word in pair)  # zero, 0, one, 1, ...: row 2 * label + choice
LESSON_TEXT_ENCODER = "openai/clip-vit-large-patch14"
