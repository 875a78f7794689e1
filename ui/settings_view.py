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


def _cell(value, limit: int = 160) -> str:
    text = str(value).replace("\n", " ").replace("|", "\\|")
    return text if len(text) <= limit else text[:limit - 1] + "…"


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
            rows.append((t(lang, key), t(lang, f"preset_{value}") if key == "preset" else value))
    output = sidecar.get("output") or {}
    if output.get("width"):
        rows.insert(1, (t(lang, "settings_size"), f"{output['width']} × {output['height']}, {output.get('duration_s', 0):g} s"))
    timings = sidecar.get("timings_s") or {}
    if timings:
        rows.append((t(lang, "settings_time"), f"{sum(timings.values()):.1f} s"))
    head = f"| {t(lang, 'settings_table_setting')} | {t(lang, 'settings_table_value')} |\n| --- | --- |\n"
    return head + "\n".join(f"| {_cell(name)} | {_cell(value)} |" for name, value in rows)


SYSTEM_LABELS = {
    "en": {"device": "Device", "torch_device": "Torch device", "dtype": "Precision", "memory": "Memory",
           "resident_models": "Models in memory", "queue": "Jobs waiting", "outputs": "Outputs folder",
           "offload": "Offload", "attention": "Attention", "vae_tiling": "VAE in tiles",
           "gpu_memory_budget_gb": "GPU memory budget (GB)", "demo": "Demo models", "runtime": "Libraries"},
    "zh": {"device": "设备", "torch_device": "Torch 设备", "dtype": "精度", "memory": "内存", "resident_models": "常驻模型",
           "queue": "排队任务", "outputs": "输出文件夹", "offload": "卸载", "attention": "注意力实现",
           "vae_tiling": "VAE 分块", "gpu_memory_budget_gb": "显存预算（GB）", "demo": "演示模型", "runtime": "库版本"},
}


def _plain(value) -> str:
    """A JSON value in a line: dicts as ``key value`` pairs, lists of models by title, nothing as a dash."""
    if isinstance(value, dict):
        return ", ".join(f"{k} {_plain(v)}" for k, v in value.items() if v not in (None, "", [], {})) or "–"
    if isinstance(value, list):
        return ", ".join(_plain(v.get("title", v)) if isinstance(v, dict) else _plain(v) for v in value) or "–"
    if isinstance(value, bool):
        return "✓" if value else "–"
    return "–" if value in (None, "") else str(value)


def _system_value(key: str, value) -> str:
    """Memory as used / total, the runtime as its library versions; anything else plainly."""
    if key == "memory" and isinstance(value, dict) and "used_gib" in value:
        text = f"{value['used_gib']:.1f} / {value.get('total_gib', 0):.1f} GiB"
        return text + (f" (app {value['process_gib']:.1f} GiB)" if value.get("process_gib") is not None else "")
    if key == "runtime" and isinstance(value, dict):
        versions = value.get("versions") or {}
        found = ", ".join(f"{name} {version}" for name, version in versions.items() if version)
        cuda = f", CUDA {value['cuda']}" if value.get("cuda") else ""
        return f"Python {value.get('python', '?')}{cuda}" + (f", {found}" if found else "")
    return _plain(value)


def system_table(described: str | None, lang: str) -> str:
    """The System tab's JSON (``describe``) as a two-column table in ``lang``; '' when it is not JSON."""
    try:
        data = json.loads(described or "")
    except ValueError:
        return ""
    if not isinstance(data, dict):
        return ""
    labels = SYSTEM_LABELS["zh" if str(lang).startswith("zh") else "en"]
    head = f"| {t(lang, 'settings_table_setting')} | {t(lang, 'settings_table_value')} |\n| --- | --- |\n"
    return head + "\n".join(f"| {_cell(labels.get(key, key))} | {_cell(_system_value(key, value), 400)} |"
                             for key, value in data.items())
