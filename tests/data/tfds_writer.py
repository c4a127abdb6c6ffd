"""Write small real TFDS datasets in the tests, with TFDS's own builder and no TensorFlow.

``write_tfds_dataset`` runs ``download_and_prepare`` of a ``GeneratorBasedBuilder`` created on
the fly (not registered, so it is found later only by name from its data_dir, like a user's
custom dataset). ArrayRecord is written by TFDS itself. TFRecord is written by TFDS too, except
for the record framing: TFDS calls ``tf.io.TFRecordWriter`` there, so when TensorFlow is absent
that one call is replaced by :func:`convjax.data.tfds_files.write_tfrecord` (the same bytes).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence

import numpy as np


@contextlib.contextmanager
def _tfrecord_writer_without_tf() -> Iterator[None]:
    from tensorflow_datasets.core import file_adapters

    from convjax.data.tfds_files import write_tfrecord

    try:
        import tensorflow  # noqa: F401

        yield  # TFDS writes with TensorFlow itself
        return
    except ImportError:
        pass
    adapter = file_adapters.TfRecordFileAdapter
    original = adapter.__dict__["write_examples"]

    def write_examples(cls, path, iterator):
        write_tfrecord(os.fspath(path), (record for _, record in iterator))

    adapter.write_examples = classmethod(write_examples)
    try:
        yield
    finally:
        adapter.write_examples = original


def write_tfds_dataset(
    data_dir: str | os.PathLike,
    name: str,
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    *,
    class_names: Sequence[str],
    file_format: str = "array_record",
    version: str = "1.0.0",
    image_shape: tuple[int | None, int | None, int] | None = None,
) -> str:
    """Prepare ``name`` in ``data_dir`` from uint8 images ``(N, H, W, C)`` (or a list of
    ``(H, W, C)`` of varying size) and int labels per split; returns the version directory."""
    import PIL.Image
    import tensorflow_datasets as tfds

    first_images = next(iter(splits.values()))[0]
    shape = image_shape or tuple(np.asarray(first_images[0]).shape)

    def to_pil(image: np.ndarray) -> PIL.Image.Image:
        image = np.asarray(image, np.uint8)
        return PIL.Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=shape),
                    "label": tfds.features.ClassLabel(names=list(class_names)),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(split) for split in splits}

    def _generate_examples(self, split):
        images, labels = splits[split]
        for i, (image, label) in enumerate(zip(images, labels)):
            yield i, {"image": to_pil(image), "label": int(label)}

    builder_cls = type(
        f"ConvjaxTest_{name}",
        (tfds.core.GeneratorBasedBuilder,),
        {
            "name": name,
            "VERSION": tfds.core.Version(version),
            "_info": _info,
            "_split_generators": _split_generators,
            "_generate_examples": _generate_examples,
            "__module__": __name__,
            "code_path": None,  # no checksums file to look for next to the code
        },
        skip_registration=True,
    )
    builder = builder_cls(data_dir=os.fspath(data_dir), file_format=file_format)
    with _tfrecord_writer_without_tf():
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(verify_ssl=False))
    return os.fspath(builder.data_dir)
