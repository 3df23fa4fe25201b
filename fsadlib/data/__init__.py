"""Data layer: samples tables, readers, the synthetic default, k-shot files, tensors, anomaly synthesis.

Public API (the contracts other modules code against)::

    load_samples(dataset, root=None, categories=None) -> DataFrame[SAMPLE_COLUMNS]
    AnomalyDataset(samples, image_size, mask_size=None, mean=CLIP_MEAN, std=CLIP_STD, geometry="resize_crop")
    load_images(paths, image_size, mean=CLIP_MEAN, std=CLIP_STD, geometry="resize_crop") -> Tensor [k, 3, S, S]
    read_image(path) -> RGB PIL image (images.IMAGE_MODE_RULE); geometry.GEOMETRIES
    resolve_geometry(dataset, method_geometry=None) -> the image transform of a method's inputs from dataset
    shots.shot_file / shots.make_shots / shots.load_shots
    index.write_index(samples) -> data/index/<dataset>.csv (samples + content hashes)
    data_card(dataset, samples=None) -> card; write_data_card(card) -> reports/data_cards/<dataset>.json
    export_meta_json(dataset, out_dir) -> meta.json readable by AnomalyCLIP / Bayes-PFL
    synthetic.generate(root, seed, image_size, n_train, n_test_good, n_test_bad, categories)
    augment.synthesize_anomaly(image, rng, source=None, mode="perlin", nsa=None) -> (image, mask, label)
    nsa.nsa_anomaly(dest_u8, source_u8, rng, nsa.nsa_params(category)) -> (image, soft label, patches)
"""

from fsadlib.data import augment, index, nsa, shots, synthetic
from fsadlib.data.card import card_table, data_card, not_applicable, write_data_card
from fsadlib.data.dataset import (
    CLIP_MEAN,
    CLIP_STD,
    MASK_RULE,
    AnomalyDataset,
    describe_transform,
    fitted_pixels,
    load_images,
    load_mask,
    normalise,
)
from fsadlib.data.export import export_meta_json
from fsadlib.data.files import portable_path, resolve_path
from fsadlib.data.geometry import DEFAULT_GEOMETRY, GEOMETRIES, check_geometry
from fsadlib.data.images import IMAGE_MODE_RULE, read_image
from fsadlib.data.readers import READERS, write_meta_json
from fsadlib.data.samples import (
    SAMPLE_COLUMNS,
    DatasetSpec,
    check_samples,
    dataset_root,
    dataset_spec,
    dataset_specs,
    load_samples,
    read_samples,
    resolve_geometry,
    samples_geometry,
    select_categories,
)
from fsadlib.data.shots import ShotsConfig, load_shots, make_shots, shot_file
from fsadlib.data.synthetic import SyntheticConfig

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "DEFAULT_GEOMETRY",
    "GEOMETRIES",
    "IMAGE_MODE_RULE",
    "MASK_RULE",
    "READERS",
    "SAMPLE_COLUMNS",
    "AnomalyDataset",
    "DatasetSpec",
    "ShotsConfig",
    "SyntheticConfig",
    "augment",
    "card_table",
    "check_geometry",
    "check_samples",
    "data_card",
    "dataset_root",
    "dataset_spec",
    "dataset_specs",
    "describe_transform",
    "export_meta_json",
    "fitted_pixels",
    "index",
    "load_images",
    "load_mask",
    "load_samples",
    "load_shots",
    "make_shots",
    "normalise",
    "not_applicable",
    "nsa",
    "portable_path",
    "read_image",
    "read_samples",
    "resolve_geometry",
    "resolve_path",
    "samples_geometry",
    "select_categories",
    "shot_file",
    "shots",
    "synthetic",
    "write_data_card",
    "write_meta_json",
]
