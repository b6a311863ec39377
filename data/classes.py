"""The one canonical class order used across datasets, and the names that map onto it.

RAF-DB's label order (1..7) comes first so RAF-DB labels map by subtracting one;
contempt (FERPlus, AffectNet) is the optional eighth class.
"""
from __future__ import annotations

CANONICAL_CLASSES: tuple[str, ...] = (
    "surprise",
    "fear",
    "disgust",
    "happiness",
    "sadness",
    "anger",
    "neutral",
    "contempt",
)

CLASS_ALIASES: dict[str, str] = {
    "surprise": "surprise",
    "surprised": "surprise",
    "fear": "fear",
    "fearful": "fear",
    "disgust": "disgust",
    "disgusted": "disgust",
    "happy": "happiness",
    "happiness": "happiness",
    "sad": "sadness",
    "sadness": "sadness",
    "angry": "anger",
    "anger": "anger",
    "neutral": "neutral",
    "contempt": "contempt",
}


def canonical_name(folder_name: str) -> str | None:
    """Canonical class for a folder name such as ``Angry`` or ``3_happy``; None if unknown."""
    key = folder_name.strip().lower()
    if key in CLASS_ALIASES:
        return CLASS_ALIASES[key]
    # Releases often number their folders ("0_angry", "angry-0").
    for token in key.replace("-", "_").split("_"):
        if token in CLASS_ALIASES:
            return CLASS_ALIASES[token]
    return None
