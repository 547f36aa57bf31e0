"""Event class vocabularies.

The 25 LLP classes are listed in the order of the paper's code
(YapengTian/AVVP-ECCV20, dataloader.py ``ids_to_multinomial``): the class
index of every LLP array and checkpoint follows this order.
"""

from __future__ import annotations

LLP_CLASSES: tuple[str, ...] = (
    "Speech", "Car", "Cheering", "Dog", "Cat",
    "Frying_(food)", "Basketball_bounce", "Fire_alarm", "Chainsaw", "Cello",
    "Banjo", "Singing", "Chicken_rooster", "Violin_fiddle", "Vacuum_cleaner",
    "Baby_laughter", "Accordion", "Lawn_mower", "Motorcycle", "Helicopter",
    "Acoustic_guitar", "Telephone_bell_ringing", "Baby_cry_infant_cry", "Blender",
    "Clapping",
)

MODALITIES: tuple[str, ...] = ("audio", "visual", "audiovisual")


def class_index(classes: tuple[str, ...] = LLP_CLASSES) -> dict[str, int]:
    """Name -> index for a vocabulary."""
    return {c: i for i, c in enumerate(classes)}
