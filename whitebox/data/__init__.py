"""Data sources: synthetic models of the theory and small real datasets."""
from .subspace import subspace_bases, subspace_mixture
from .images import (DATASETS, load_cifar10, load_dataset, load_digits, load_mnist,
                     load_mnist_5k, load_mnist_idx, read_idx)
from .masking import mask_tokens
from .augment import random_distort, random_shift, sample_bilinear
from .loader import BatchLoader, channel_stats, normalize, train_test_split
from .text import (CharTokenizer, bigram_cross_entropy, pydoc_corpus, random_windows,
                   read_text, sequential_windows, split_text, unigram_accuracy)
from .multicrop import MultiCrop, crop_boxes, jitter_intensity, resize_crops
