"""UI texts of the I2V tab, in English and Simplified Chinese (merged by ``ui/i18n.py``)."""

STRINGS: dict[str, dict[str, str]] = {"en": {}, "zh": {}}
