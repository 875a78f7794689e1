"""A clip's sidecar (its recorded settings, JSON) as a short table a person reads; the JSON stays one click away."""

from __future__ import annotations

import json

from .i18n import t

# (label key, path in the sidecar); labels reuse the form's own texts so the table speaks the page's language
ROWS = [
    ("model", ("model", "title")),
    ("prompt", ("settings", "prompt")),
    ("negative_prompt", ("settings", "negative_prompt")),
    ("preset", ("settings", "preset")),
    ("resolution", ("settings", "resolution")),
    ("aspect", ("settings", "aspect")),
    ("frames", ("output", "frames")),
    ("fps", ("output", "fps")),
    ("steps", ("settings", "steps")),
    ("guidance", ("settings", "guidance")),
    ("shift", ("settings", "shift")),
    ("seed", ("settings", "seed")),
    ("step_cache", ("settings", "step_cache")),
]


def _cell(value) -> str:
    text = str(value).replace("\n", " ").replace("|", "\\|")
    return text if len(text) <= 160 else text[:157] + "…"


def settings_table(recorded: str | None, lang: str) -> str:
    """Markdown: one row per setting the clip was made with, plus its size, length and time; '' without one."""
    try:
        sidecar = json.loads(recorded or "")
    except ValueError:
        return ""
    if not isinstance(sidecar, dict):
        return ""
    rows = []
    for key, path in ROWS:
        value = sidecar
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        if value not in (None, ""):
            rows.append((t(lang, key), value))
    output = sidecar.get("output") or {}
    if output.get("width"):
        rows.insert(1, (t(lang, "settings_size"), f"{output['width']} × {output['height']}, {output.get('duration_s', 0):g} s"))
    timings = sidecar.get("timings_s") or {}
    if timings:
        rows.append((t(lang, "settings_time"), f"{sum(timings.values()):.1f} s"))
    head = f"| {t(lang, 'settings_table_setting')} | {t(lang, 'settings_table_value')} |\n| --- | --- |\n"
    return head + "\n".join(f"| {_cell(name)} | {_cell(value)} |" for name, value in rows)
