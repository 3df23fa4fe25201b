"""Readers: ``reader(root: Path, **options) -> DataFrame[category, split, label, defect, image_path, mask_path]``.

Paths are absolute strings; ``mask_path`` is ``""`` where there is no mask. Masks pair with images
by file name, never by sorted position. :func:`fsadlib.data.samples.read_samples` adds the ``dataset``
column, makes the paths portable and validates the table.

``READERS`` maps a reader name (``params.yaml: datasets.<name>.reader``) to its function and
``CARDS`` to what the data card states about it (:class:`ReaderCard`: source, licence, citation,
split rule, which metrics apply). One module per data-set family.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from fsadlib.data.files import ROW_COLUMNS
from fsadlib.data.readers.aitex import read_aitex
from fsadlib.data.readers.common import BALANCED_SPLIT, INCTRL_SPLIT
from fsadlib.data.readers.dagm import read_dagm
from fsadlib.data.readers.elpv import read_elpv
from fsadlib.data.readers.folder import read_folder
from fsadlib.data.readers.kolektor import read_ksdd, read_ksdd2
from fsadlib.data.readers.loco import read_loco
from fsadlib.data.readers.medical import read_br35h, read_brainmri, read_headct
from fsadlib.data.readers.meta_json import read_meta_json, write_meta_json
from fsadlib.data.readers.mvtec import read_bayes_pfl, read_btad, read_dtd_synthetic, read_mpdd, read_mvtec
from fsadlib.data.readers.rsdd import read_rsdd
from fsadlib.data.readers.segmentation import read_clinicdb, read_colondb, read_endo, read_isic, read_kvasir
from fsadlib.data.readers.semantic import read_cifar10, read_mnist
from fsadlib.data.readers.visa import read_visa


@dataclass(frozen=True)
class ReaderCard:
    """What a reader's data set is: ``title``, where the official archive comes from (``source``),
    ``licence``, ``citation`` and the ``split`` rule the reader applies (which paper's)."""

    title: str
    source: str
    licence: str
    citation: str
    split: str


_OFFICIAL = "the official split of the archive"
_SEGMENTATION = "every image is an anomalous test image (pixel metrics only), as AdaCLIP / AnomalyCLIP / Bayes-PFL"
_MEDICAL = ("split=inctrl: " + INCTRL_SPLIT + ", anomalies in test (InCTRL); split=test_only: every image in "
            "test (AdaCLIP / AnomalyCLIP / Bayes-PFL zero-shot)")

READERS: dict[str, Callable[..., pd.DataFrame]] = {
    "mvtec": read_mvtec,
    "visa": read_visa,
    "meta_json": read_meta_json,
    "folder": read_folder,
    "mpdd": read_mpdd,
    "btad": read_btad,
    "dtd_synthetic": read_dtd_synthetic,
    "bayes_pfl": read_bayes_pfl,
    "ksdd": read_ksdd,
    "ksdd2": read_ksdd2,
    "rsdd": read_rsdd,
    "dagm": read_dagm,
    "aitex": read_aitex,
    "loco": read_loco,
    "elpv": read_elpv,
    "headct": read_headct,
    "brainmri": read_brainmri,
    "br35h": read_br35h,
    "isic": read_isic,
    "clinicdb": read_clinicdb,
    "colondb": read_colondb,
    "kvasir": read_kvasir,
    "endo": read_endo,
    "mnist": read_mnist,
    "cifar10": read_cifar10,
}

CARDS: dict[str, ReaderCard] = {
    "mvtec": ReaderCard("MVTec AD", "https://www.mvtec.com/company/research/datasets/mvtec-ad", "CC BY-NC-SA 4.0",
                        "Bergmann et al., MVTec AD, CVPR 2019", _OFFICIAL),
    "visa": ReaderCard("VisA", "https://github.com/amazon-science/spot-diff", "CC BY 4.0",
                       "Zou et al., SPot-the-Difference, ECCV 2022", "split_csv/1cls.csv (the official 1-class split)"),
    "meta_json": ReaderCard("meta.json set", "AnomalyCLIP / APRIL-GAN / Bayes-PFL meta.json", "see the data set",
                            "see the data set", "the train/test keys of meta.json"),
    "folder": ReaderCard("folder set", "the user's own folders", "see the data set", "see the data set",
                         "glob patterns per role; optional ratio/seed split of one normal folder (recorded)"),
    "mpdd": ReaderCard("MPDD", "https://github.com/stepanje/MPDD", "CC BY-NC-SA 4.0 (not verified here: check the source)",
                       "Jezek et al., Deep learning-based defect detection of metal parts, ICUMT 2021", _OFFICIAL),
    "btad": ReaderCard("BTAD", "BTech_Dataset_transformed.zip (Mishra et al.)", "CC BY-SA 4.0 (not verified here: check the source)",
                       "Mishra et al., VT-ADL, ISIE 2021", _OFFICIAL),
    "dtd_synthetic": ReaderCard("DTD-Synthetic", "https://drive.google.com (Aota et al., AdaCLIP mirror)",
                                "research use (not verified here: check the source)",
                                "Aota et al., Zero-shot versus many-shot, WACV 2023", _OFFICIAL),
    "bayes_pfl": ReaderCard("Bayes-PFL standardised set", "DATA_three.zip of xiaozhen228/Bayes-PFL",
                            "that of the source data set", "Qu et al., Bayes-PFL, CVPR 2025",
                            "the authors' frozen split (normals sampled once by them)"),
    "ksdd": ReaderCard("KolektorSDD", "https://www.vicos.si/resources/kolektorsdd/", "CC BY-NC-SA 4.0 (not verified here: check the source)",
                       "Tabernik et al., Segmentation-based deep-learning approach for surface-defect detection, "
                       "J. Intell. Manuf. 2019",
                       "images cut into 3 bands; bands with label pixels anomalous; normal bands: " + INCTRL_SPLIT
                       + " (InCTRL convert_SDD.py)"),
    "ksdd2": ReaderCard("KolektorSDD2", "https://www.vicos.si/resources/kolektorsdd2/", "CC BY-NC-SA 4.0 (not verified here: check the source)",
                        "Bozic et al., Mixed supervision for surface-defect detection, Computers in Industry 2021",
                        "split=bayes_pfl: anomalous images of train/ and test/; " + BALANCED_SPLIT
                        + " (Bayes-PFL); split=official: train/ normals train, test/ tests"),
    "rsdd": ReaderCard("RSDDs", "Gan et al. (Beijing Jiaotong University) RSDDs dataset", "research use (not verified here: check the source)",
                       "Gan et al., A hierarchical extractor-based visual rail surface inspection system, "
                       "IEEE Sensors J. 2017",
                       "rails cut into square tiles; tiles with mask pixels anomalous; " + BALANCED_SPLIT
                       + ", per rail type (deterministic Bayes-PFL rule)"),
    "dagm": ReaderCard("DAGM 2007", "https://hci.iwr.uni-heidelberg.de/content/weakly-supervised-learning-industrial-"
                       "optical-inspection", "research use (not verified here: check the source)",
                       "Wieler & Hahn, Weakly supervised learning for industrial optical inspection, DAGM 2007",
                       "split=bayes_pfl: Train+Test pooled per class; " + BALANCED_SPLIT
                       + " (Bayes-PFL / AdaCLIP); split=official: Train normals train, Test tests"),
    "aitex": ReaderCard("AITEX", "https://www.aitex.es/afid/", "research use (not verified here: check the source)",
                        "Silvestre-Blanes et al., A public fabric database for defect detection methods, "
                        "AUTEX Research Journal 2019",
                        "normal images cut into 16 tiles of 256 px, " + INCTRL_SPLIT + "; defect images tiled "
                        "the same way, tiles with mask pixels kept as anomalous (InCTRL convert_AITEX.py)"),
    "loco": ReaderCard("MVTec LOCO AD", "https://www.mvtec.com/company/research/datasets/mvtec-loco",
                       "CC BY-NC-SA 4.0", "Bergmann et al., Beyond dents and scratches, IJCV 2022",
                       _OFFICIAL + " (validation/good left out unless validation_as_train=1)"),
    "elpv": ReaderCard("ELPV", "https://github.com/zae-bayern/elpv-dataset (PyPI elpv-dataset)", "CC BY-NC-SA 4.0",
                       "Deitsch et al., Solar Energy 185, 2019; Buerhop-Lutz et al., EU PVSEC 2018",
                       "probability 0 normal, " + INCTRL_SPLIT + " in labels.csv order; probability 1 "
                       "anomalous (test); 1/3 and 2/3 dropped (InCTRL convert_elpv.py)"),
    "headct": ReaderCard("HeadCT", "https://www.kaggle.com/datasets/felipekitamura/head-ct-hemorrhage",
                         "CC BY-NC-SA 4.0 (not verified here: check the source)", "Kitamura, Head CT - hemorrhage, Kaggle 2018", _MEDICAL),
    "brainmri": ReaderCard("BrainMRI", "https://www.kaggle.com/datasets/navoneel/brain-mri-images-for-brain-tumor-detection",
                           "unknown (not verified here: check the source)", "Chakrabarty, Brain MRI Images for Brain Tumor "
                           "Detection, Kaggle 2019", _MEDICAL),
    "br35h": ReaderCard("Br35H", "https://www.kaggle.com/datasets/ahmedhamada0/brain-tumor-detection",
                        "unknown (not verified here: check the source)", "Hamada, Br35H :: Brain Tumor Detection 2020, Kaggle",
                        _MEDICAL),
    "isic": ReaderCard("ISIC 2016 (part 1 test)", "https://challenge.isic-archive.com/data/#2016", "CC BY-NC 4.0 (not verified here: check the source)",
                       "Gutman et al., ISIC 2016, arXiv 1605.01397", _SEGMENTATION),
    "clinicdb": ReaderCard("CVC-ClinicDB", "https://polyp.grand-challenge.org/CVCClinicDB/",
                           "research use (not verified here: check the source)", "Bernal et al., WM-DOVA maps, CMIG 43, 2015", _SEGMENTATION),
    "colondb": ReaderCard("CVC-ColonDB", "PraNet polyp test sets (CVC-ColonDB folder)", "research use (not verified here: check the source)",
                          "Bernal et al., Towards automatic polyp detection, Pattern Recognition 45, 2012",
                          _SEGMENTATION),
    "kvasir": ReaderCard("Kvasir-SEG", "https://datasets.simula.no/kvasir-seg/", "research and educational use (not verified here: check the source)",
                         "Jha et al., Kvasir-SEG, MMM 2020", _SEGMENTATION),
    "endo": ReaderCard("EndoTect 2020 (segmentation test)", "https://endotect.com", "research use (not verified here: check the source)",
                       "Hicks et al., The EndoTect 2020 challenge, ICPR workshops 2021", _SEGMENTATION),
    "mnist": ReaderCard("MNIST", "http://yann.lecun.com/exdb/mnist/", "CC BY-SA 3.0 (not verified here: check the source)",
                        "LeCun et al., Gradient-based learning applied to document recognition, Proc. IEEE 1998",
                        "one-vs-all (InCTRL): class c's training images train category c; every test image "
                        "tests every category, normal iff of class c"),
    "cifar10": ReaderCard("CIFAR-10", "https://www.cs.toronto.edu/~kriz/cifar.html", "none stated (not verified here: check the source)",
                          "Krizhevsky, Learning multiple layers of features from tiny images, 2009",
                          "one-vs-all (InCTRL): class c's training images train category c; every test image "
                          "tests every category, normal iff of class c"),
}

__all__ = ["CARDS", "READERS", "ROW_COLUMNS", "ReaderCard", "read_folder", "read_meta_json", "read_mvtec",
           "read_visa", "write_meta_json"]
