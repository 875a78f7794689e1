"""UI texts of the ASR tab, in English and Simplified Chinese (merged by ``ui/i18n.py``)."""

STRINGS: dict[str, dict[str, str]] = {"en": {}, "zh": {}}
