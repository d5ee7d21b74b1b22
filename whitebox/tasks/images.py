"""What the image tasks (classify, mae) share: their data settings and one split.

Both read the same datasets, hold out the same images for the same seed,
take the patch size default of the dataset, and check the data once, on the
host, before any batch moves to the device.
"""
import dataclasses

from ..data.images import DATASETS, load_dataset
from ..data.loader import channel_stats
from ..functional.embedding import check_ids
from ..settings import COUNT, POSITIVE_INT, Check, setting

NUM_CLASSES = 10                 # every dataset offered here has ten classes
# 7 x 7 patches on MNIST: 17 tokens instead of the 50 of 4 x 4 patches, about
# three times less work per step, and on 4,000 digits no less accurate.
DEFAULT_PATCH = {"mnist5k": 7, "mnist": 7, "cifar10": 4, "digits": 2}
# random distortions of training digits (classify's --rotate, --zoom, --warp; benchmarks/README.md
# "The default classification recipe"); none for CIFAR-10 and the 8 x 8 digits
DIGIT_DISTORTION = dict(rotate=15.0, zoom=0.15, warp=1.5)
DEFAULT_DISTORTION = {"mnist5k": DIGIT_DISTORTION, "mnist": DIGIT_DISTORTION}
DEFAULT_OUT = {"mnist5k": "runs/mnist", "mnist": "runs/mnist-full", "cifar10": "runs/cifar10",
               "digits": "runs/digits"}
OPTIONAL_COUNT = Check(int, low=1, optional=True)


@dataclasses.dataclass
class ImageData:
    """Which images a task reads and how many (load_split's settings, with ``patch``)."""
    dataset: str = setting("mnist5k", "images (mnist5k ships with the package)",
                           Check(str, choices=DATASETS))
    data: str = setting(None, "folder with the MNIST idx files or the CIFAR-10 python batches",
                        Check(str, optional=True))
    n_train: int = setting(None, "use at most this many training images (default: all)",
                           OPTIONAL_COUNT)
    n_test: int = setting(None, "held-out size (mnist5k: 1000, digits: 297; else the test set)",
                          OPTIONAL_COUNT)


@dataclasses.dataclass
class ImageOptions(ImageData):
    """The data settings of an image task (each task adds its own after these)."""
    max_shift: int = setting(2, "random shift of training images, in pixels", COUNT)
    patch: int = setting(None, "patch size (default: MNIST 7, CIFAR-10 4, digits 2)",
                         OPTIONAL_COUNT)
    measure_size: int = setting(256, "held-out images used for the per-layer measures",
                                POSITIVE_INT)


def resolve_patch(options):
    """The dataset's patch size where none was given."""
    if options.patch is None:
        options.patch = DEFAULT_PATCH[options.dataset]
    return options


def load_split(options, seed):
    """The task's images: a deterministic split, checked once on the host.

    Returns: (train_images, train_labels), (test_images, test_labels), (mean, std),
    images float32 (n, C, H, W) in [0, 1], not yet normalised; mean and std
    per channel, of the training split only.
    """
    o = options
    split = load_dataset(o.dataset, o.data, seed=seed,
                         n_test=o.n_test if o.dataset in ("mnist5k", "digits") else None)
    (train_images, train_labels), (test_images, test_labels) = split
    if o.n_train is not None:
        train_images, train_labels = train_images[:o.n_train], train_labels[:o.n_train]
    if o.n_test is not None:
        test_images, test_labels = test_images[:o.n_test], test_labels[:o.n_test]
    for name, labels in (("training labels", train_labels), ("test labels", test_labels)):
        check_ids(name, labels, NUM_CLASSES)         # once, on the host: no check per step
    H, W = train_images.shape[2:]
    if H % o.patch or W % o.patch:
        raise ValueError(f"patch must divide the {H}x{W} images of {o.dataset}, got {o.patch}")
    return (train_images, train_labels), (test_images, test_labels), channel_stats(train_images)
