"""Vocabularies behind MFSC captions and MLLP's abnormal prompts.

- ``COLORS``: named colours with an sRGB prototype in [0, 1]; the offline captioner names a region by
  the nearest prototype in CIELAB. The names also form the negative colour vocabulary of MLLP.
- ``TEXTURES``, ``SHAPES``, ``LOCATIONS``, ``NUMBERS``: the other attribute vocabularies. MLLP's
  handcrafted-abnormal attribute prompts use the words of a vocabulary that do NOT describe the
  category ("negative attributes", FineGrainedAD B1.3); abnormal entity prompts move an entity to
  another ``LOCATIONS`` word.
- ``ANOMALY_PHRASES``: per MVTec AD / VisA category, templates with one ``{}`` for the object noun
  ("cracked {}", "{} with hole"), written from the defect types the data sets document;
  ``SYNTHETIC_ANOMALY_PHRASES`` for every synthetic category; any other category gets
  ``GENERIC_ANOMALY_PHRASES`` (PromptAD-style generic states).
"""

from __future__ import annotations

COLORS: dict[str, tuple[float, float, float]] = {
    "black": (0.0, 0.0, 0.0), "white": (1.0, 1.0, 1.0), "gray": (0.5, 0.5, 0.5),
    "silver": (0.75, 0.75, 0.75), "red": (0.85, 0.1, 0.1), "orange": (1.0, 0.55, 0.0),
    "yellow": (0.95, 0.9, 0.1), "gold": (0.8, 0.65, 0.2), "green": (0.1, 0.65, 0.15),
    "olive": (0.5, 0.5, 0.1), "cyan": (0.1, 0.8, 0.85), "blue": (0.1, 0.25, 0.85),
    "purple": (0.5, 0.15, 0.6), "pink": (1.0, 0.6, 0.75), "brown": (0.55, 0.3, 0.1),
    "beige": (0.9, 0.85, 0.7),
}
TEXTURES: tuple[str, ...] = ("smooth", "fine-grained", "coarse", "striped", "glossy", "matte", "fibrous",
                             "porous", "woven", "mottled")
SHAPES: tuple[str, ...] = ("round", "oval", "square", "rectangular", "triangular", "elongated", "ring-shaped",
                           "irregular", "polygonal", "flat", "cylindrical", "curved", "star-shaped",
                           "cross-shaped", "spherical", "hexagonal")
LOCATIONS: tuple[str, ...] = ("top left", "top", "top right", "left", "center", "right", "bottom left",
                              "bottom", "bottom right", "whole image")
NUMBERS: tuple[str, ...] = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")

GENERIC_ANOMALY_PHRASES: tuple[str, ...] = (
    "damaged {}", "broken {}", "{} with flaw", "{} with defect", "{} with damage", "abnormal {}",
    "imperfect {}", "blemished {}",
)
ANOMALY_PHRASES: dict[str, tuple[str, ...]] = {
    # MVTec AD
    "bottle": ("{} with large breakage", "{} with small breakage", "{} with contamination"),
    "cable": ("{} with bent wire", "{} with swapped cable", "{} with combined defects", "{} with cut inner insulation",
              "{} with cut outer insulation", "{} with missing cable", "{} with missing wire", "{} with poked insulation"),
    "capsule": ("cracked {}", "{} with faulty imprint", "{} with poked hole", "{} with scratch", "squeezed {}"),
    "carpet": ("{} with color stain", "{} with cut", "{} with hole", "{} with metal contamination",
               "{} with thread"),
    "grid": ("{} with bent wire", "broken {}", "{} with glue", "{} with metal contamination", "{} with thread"),
    "hazelnut": ("cracked {}", "{} with cut", "{} with hole", "{} with print"),
    "leather": ("{} with color stain", "{} with cut", "{} with fold", "{} with glue", "{} with poke"),
    "metal_nut": ("bent {}", "{} with color stain", "flipped {}", "{} with scratch"),
    "pill": ("{} with color stain", "{} with combined defects", "{} with contamination", "cracked {}",
             "{} with faulty imprint", "{} with pill type defect", "{} with scratch"),
    "screw": ("{} with manipulated front", "{} with scratched head", "{} with scratched neck", "{} with thread side",
              "{} with thread top"),
    "tile": ("cracked {}", "{} with glue strip", "{} with gray stroke", "{} with oil", "{} with rough surface"),
    "toothbrush": ("defective {}", "{} with bent bristles", "{} with missing bristles"),
    "transistor": ("{} with bent lead", "{} with cut lead", "{} with damaged case", "misplaced {}"),
    "wood": ("{} with color stain", "{} with combined defects", "{} with hole", "{} with liquid", "{} with scratch"),
    "zipper": ("{} with broken teeth", "{} with combined defects", "{} with fabric border", "{} with fabric interior",
               "{} with rough teeth", "{} with split teeth", "{} with squeezed teeth"),
    # VisA
    "candle": ("{} with chunk of wax missing", "{} with damaged corner", "{} with different colour spot",
               "{} with foreign particals on wax", "{} with weird candle wick", "{} with extra wax"),
    "capsules": ("{} with bubble", "{} with discolor", "{} with scratch", "{} with leak", "misshapen {}"),
    "cashew": ("{} with burnt spot", "{} with corner or edge breakage", "{} with different colour spot",
               "{} with middle breakage", "{} with small holes", "{} with stuck together", "{} with scratches"),
    "chewinggum": ("{} with corner missing", "{} with scratches", "{} with chunk of gum missing",
                   "{} with similar colour spot"),
    "fryum": ("{} with burnt", "{} with corner or edge breakage", "{} with different colour spot",
              "{} with middle breakage", "{} with similar colour spot", "{} with fryum stuck together"),
    "macaroni1": ("{} with chip around edge and corner", "{} with different colour spot", "{} with middle breakage",
                  "{} with small chip around edge", "{} with small scratches", "{} with similar colour spot"),
    "macaroni2": ("{} with breakage down the middle", "{} with color spot similar to the object",
                  "{} with different color spot", "{} with small chip around edge", "{} with small cracks",
                  "{} with small scratches"),
    "pcb1": ("{} with bent", "{} with melt", "{} with missing", "{} with scratch"),
    "pcb2": ("{} with bent", "{} with melt", "{} with missing", "{} with scratch"),
    "pcb3": ("{} with bent", "{} with melt", "{} with missing", "{} with scratch"),
    "pcb4": ("{} with burnt", "{} with scratch", "{} with missing", "{} with damage", "{} with extra",
             "{} with wrong place"),
    "pipe_fryum": ("{} with burnt", "{} with corner and edge breakage", "{} with different colour spot",
                   "{} with middle breakage", "{} with similar colour spot", "{} with stuck together"),
}
#: the synthetic data set (fsadlib.data.synthetic) draws the same defect kinds in every category
SYNTHETIC_ANOMALY_PHRASES: tuple[str, ...] = (
    "{} with scratch", "{} with hole", "{} with stain", "{} with color spot", "{} with missing part",
    "{} with extra part", "deformed {}",
)


def anomaly_phrases(dataset: str, category: str) -> tuple[str, ...]:
    """The defect templates of ``category`` of ``dataset`` (generic ones for a category not listed)."""
    if dataset == "synthetic":
        return SYNTHETIC_ANOMALY_PHRASES
    return ANOMALY_PHRASES.get(category, GENERIC_ANOMALY_PHRASES)


def number_word(n: int) -> str:
    """1 -> "one" ... 10 -> "ten", larger -> "many"."""
    return NUMBERS[n - 1] if 1 <= n <= len(NUMBERS) else "many"
