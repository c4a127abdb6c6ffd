"""convjax.data: image classification sources and grain pipelines.

Records are ``{"image": uint8 (H, W, C), "label": int}``; pipelines yield numpy batches
``{"image": float32 (B, H, W, C) normalised, "label": int32 (B,)}`` (eval batches add
``"mask"``). The trainer's entry point is :func:`make_loaders`; datasets are named by spec
strings: ``"digits"`` (embedded), ``"idx:<directory>"`` (MNIST-format files), ``"tfds:<name>"``.
:func:`describe_data` gives the one-line summary the trainer prints in its run header;
:mod:`convjax.data.tfds_files` converts TFRecord-prepared TFDS datasets to ArrayRecord.
"""

from convjax.data.augment import (
    augment_batch,
    center_crop,
    crop_with_padding,
    flip_left_right,
    normalize,
    random_crop,
    random_flip,
    random_resized_crop,
    resize,
    resize_shorter_side,
)
from convjax.data.pipeline import (
    EvalLoader,
    ImageTransform,
    Loaders,
    default_config,
    describe_data,
    eval_loader,
    make_loaders,
    train_dataset,
)
from convjax.data.sequential import SEQUENCE_MODES, pixel_permutation, sequence_shape, to_sequence
from convjax.data.sources import (
    ArraySource,
    DataError,
    Dataset,
    DatasetInfo,
    TfdsSource,
    auto_flip,
    channel_stats,
    check_stats,
    digits_dataset,
    find_tfds_builder,
    find_tfds_version_dir,
    idx_dataset,
    load_dataset,
    parse_spec,
    read_idx,
    tfds_data_dir,
    tfds_dataset,
    write_idx,
)
