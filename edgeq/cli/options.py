"""Options defined once and stacked on commands as decorators."""
from __future__ import annotations

import click

json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print the machine-readable result on stdout (human output "
                                "stays on stderr).")
force_option = click.option("--force", is_flag=True,
                            help="Overwrite existing artifacts and reports in the output folder.")
trust_pickle_option = click.option(
    "--trust-pickle", is_flag=True,
    help="Allow loading a pickle checkpoint (.pt/.pth/.ckpt). Pickles can run code: only for "
         "files you trust.")
input_shape_option = click.option(
    "--input-shape", metavar="N,C,H,W",
    help="Example input shape, when the factory returns only a module.")


def image_options(f):
    """Options that say how a folder of images becomes tensors."""
    opts = [
        click.option("--resize", type=int, metavar="PX",
                     help="Image folders: resize the short side to PX."),
        click.option("--crop", type=int, metavar="PX",
                     help="Image folders: centre-crop to PX x PX."),
        click.option("--mean", metavar="M[,M,M]", default="0",
                     help="Image folders: per-channel mean subtracted after scaling to [0,1]."),
        click.option("--std", metavar="S[,S,S]", default="1",
                     help="Image folders: per-channel std to divide by."),
        click.option("--grayscale", is_flag=True, help="Image folders: load as one channel."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def build_image_options(resize, crop, mean, std, grayscale):
    from edgeq.data import ImageOptions
    from edgeq.errors import BadInput

    def floats(text, flag):
        try:
            return tuple(float(v) for v in str(text).split(","))
        except ValueError:
            raise BadInput(f"{flag} '{text}': give numbers separated by commas") from None

    return ImageOptions(resize, crop, floats(mean, "--mean"), floats(std, "--std"), grayscale)


def runs_options(f):
    opts = [
        click.option("--runs", default=100, show_default=True, help="Timed inferences."),
        click.option("--warmup", default=10, show_default=True,
                     help="Untimed inferences first (caches, lazy init)."),
        click.option("--threads", default=1, show_default=True,
                     help="CPU threads for the delegate (phones usually pin 1-4 big cores)."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


# Calibration, shared by export, sensitivity and calib-check.
observer_option = click.option(
    "--observer", metavar="NAME",
    help="Activation observer, overriding the recipe's (default histogram): minmax, "
         "moving-average, histogram, percentile[:P], entropy, mse.")
calib_samples_option = click.option(
    "--calib-samples", type=int, metavar="N",
    help="Calibration samples, chosen deterministically (stratified by label). "
         "Default: the recipe's (256).")


metric_option = click.option(
    "--metric", type=click.Choice(["top1", "agreement", "cosine"]),
    help="Accuracy metric whose drop is reported and budgeted. Default: the model's own "
         "(a built-in sentence encoder: cosine), else top1 with labels, else agreement "
         "(top-1 agreement with fp32).")


def calib_option(required: bool = False):
    return click.option(
        "--calib", required=required, metavar="DATA",
        help="Calibration data: .npz (x[, y]), .npy, image folder, module:function, or a "
             "built-in (digits:train, photos:calib, sentences:calib).")

