"""UI text in English and Simplified Chinese, and the switch between them.

Components register the attributes to translate with ``Translator.bind``; a language change returns one
``gr.update`` per registered component. The page picks the browser's language on load (or the one the
user chose last time, kept in localStorage), and the switch in the header changes it at any time.
"""

from __future__ import annotations

from typing import Any

LANGUAGES = {"en": "English", "zh": "简体中文"}

STRINGS: dict[str, dict[str, str]] = {
    "en": {
        "title": "Cinescribe",
        "tagline": "Image and text to video, speech to text — on your own GPU.",
        "demo_banner": "**Demo mode**: every model is a tiny randomly initialised model built on this machine. "
        "Clips are noise; the app, queue, progress and outputs work as with real weights.",
        "language": "Language",
        "tab_t2v": "Text to video",
        "tab_system": "System",
        "model": "Model",
        "preset": "Preset",
        "preset_info": "Sets resolution, frames, steps, guidance and shift together; every value stays editable.",
        "prompt": "Prompt",
        "prompt_placeholder": "A cat walking on a beach at sunset, cinematic, close-up",
        "negative_prompt": "Negative prompt",
        "advanced": "Advanced settings",
        "resolution": "Resolution",
        "aspect": "Aspect ratio",
        "size_note": "Output size: **{width} × {height}**, {frames} frames = {seconds:.1f} s at {fps} fps",
        "frames": "Number of frames",
        "frames_info": "Wan makes 4n+1 frames (81 = 5 s at 16 fps), LTX-2 8n+1 (121 = 5 s at 24 fps); other counts are rounded.",
        "duration": "Duration in seconds (0 = use frames)",
        "steps": "Steps",
        "guidance": "Guidance",
        "shift": "Flow shift",
        "seed": "Seed (-1 = random)",
        "fps": "Frames per second",
        "clips": "Clips to make",
        "generate": "Generate",
        "stop": "Stop",
        "video": "Clip",
        "files": "Files (clips and their settings)",
        "used_seed": "Seed used",
        "job_settings": "Settings recorded with the clip",
        "status_idle": "Ready.",
        "status_queued": "Queued: place {position} in line.",
        "status_loading": "Loading the model (only the first job after a start or a release)…",
        "status_running": "Clip {clip}/{clips} · {stage} · step {step}/{total}",
        "status_done": "Done: {count} clip(s) in {seconds:.1f} s, in {folder}",
        "status_cancelled": "Stopped. Nothing was written for the clip in progress.",
        "status_failed": "Failed: {error}",
        "status_waited": "(after {seconds:.1f} s waiting in the queue)",
        "status_stopped_kept": "Stopped while the last clip was being finished: it was kept ({count} clip(s) written); "
        "no further clip was started.",
        "duration_info": "Sets the number of frames from the model's frame rate; 0 uses the number of frames.",
        "negative_info": "What to avoid. Wan's own default is written in Chinese, as the model was trained with "
        "it; the sidecar records the exact text used.",
        "preset_Preview": "Preview", "preset_Standard": "Standard", "preset_High quality": "High quality",
        "preset_Quick preview": "Quick preview", "preset_Turbo": "Turbo",
        "restart_confirm": "Restart the app now? Waiting jobs stay queued; a running job starts again.",
        "settings_table_setting": "Setting",
        "settings_table_value": "Value",
        "settings_json": "As JSON",
        "settings_size": "Size and length",
        "settings_time": "Time to make (all stages)",
        "stage_load": "loading model",
        "stage_text_encode": "encoding prompt",
        "stage_denoise": "denoising",
        "stage_decode": "decoding",
        "stage_encode": "writing mp4",
        "live_title": "Live",
        "live_idle": "No job running.",
        "preview": "Preview (approximate colours)",
        "log": "Log",
        "strip": "{device} · {memory} · models: {models} · queue: {queue}",
        "strip_memory_gpu": "VRAM {used:.1f}/{total:.1f} GiB",
        "strip_memory_cpu": "RAM {used:.1f}/{total:.1f} GiB",
        "strip_none": "none",
        "release_vram": "Release VRAM",
        "release_info": "Drops every resident model between jobs and gives the memory back.",
        "released": "Released {models}: {freed:.2f} GiB back ({before:.2f} → {after:.2f} GiB in use).",
        "released_nothing": "No model was resident; {freed:.2f} GiB back.",
        "restart": "Restart app",
        "restart_info": "Restarts the app; the page reconnects by itself. Waiting jobs stay queued and run when it is back; "
        "a running job starts again from the beginning.",
        "restarting": "Restarting… the page reloads when the app is back.",
        "system_info": "System",
        "settings_title": "Started with",
        "outputs_folder": "Outputs folder",
        # errors a user can meet (keys match RequestError.key)
        "err_prompt_empty": "Write a prompt: it is empty.",
        "err_prompt_long": "The prompt is too long; the limit is {limit} characters.",
        "err_frames_type": "Number of frames must be a whole number, not {value}.",
        "err_frames_range": "Number of frames must be between {low:g} and {high:g}, not {value:g}.",
        "err_steps_type": "Steps must be a whole number, not {value}.",
        "err_steps_range": "Steps must be between {low:g} and {high:g}, not {value:g}.",
        "err_seed_type": "Seed must be a whole number (or -1 for random), not {value}.",
        "err_seed_range": "Seed must be between {low:g} and {high:g}, not {value:g}.",
        "err_guidance_type": "Guidance must be a number, not {value}.",
        "err_guidance_range": "Guidance must be between {low:g} and {high:g}, not {value:g}.",
        "err_shift_type": "Flow shift must be a number, not {value}.",
        "err_shift_range": "Flow shift must be between {low:g} and {high:g}, not {value:g}.",
        "err_fps_type": "Frames per second must be a whole number, not {value}.",
        "err_fps_range": "Frames per second must be between {low:g} and {high:g}, not {value:g}.",
        "err_clips_type": "Number of clips must be a whole number, not {value}.",
        "err_clips_range": "Number of clips must be between {low:g} and {high:g}, not {value:g}.",
        "err_duration_type": "Duration must be a number, not {value}.",
        "err_duration_range": "Duration must be between {low:g} and {high:g} seconds, not {value:g}.",
        "err_model_missing": "{model} ({repo}) is not on this machine. Download it in the Models tab (or run: {command}).",
        "err_oom": "Out of GPU memory. Release VRAM frees models kept from earlier jobs; for video, try fewer "
        "frames or a lower resolution, or start with --memory-level model_offload.",
        "err_oom_lowest_level": "Out of GPU memory even at the lowest memory level (sequential offload, VAE in tiles) "
        "for {model}, {frames} frames at {width} × {height}. Use fewer frames or a lower resolution, a smaller model, "
        "or close other programs using the GPU; Release VRAM drops models kept from earlier jobs.",
        "err_step_cache_type": "The step cache threshold must be a number, not {value}.",
        "err_step_cache_range": "The step cache threshold must be between {low:g} and {high:g}, not {value:g}.",
        "err_step_cache_unsupported": "The step cache works with Wan models; {model} has no transformer blocks to "
        "skip. Set it to 0.",
        "step_cache": "Step cache (0 = off)",
        "step_cache_info": "Skips most of the model on steps that change little: faster, but the clip differs "
        "from one made without it. 0.05–0.1 keeps it close; the sidecar records the value.",
        "err_restarting": "The app is restarting; try again in a moment.",
        "err_path_invalid": "The path {value} is not a valid path.",
        "err_path_outside": "{value} is outside the app's folders; put the file in {folder} or upload it.",
        "err_not_your_job": "This job belongs to another user; you can only stop or look at your own jobs.",
        "doctor_run": "Run checks",
        "doctor_status": "Status",
        "doctor_check": "Check",
        "doctor_detail": "Found",
        "doctor_fix": "How to fix",
        "doctor_header": "**Checks** (the same as `python scripts/doctor.py`)",
        "doctor_failed": "The checks could not run: {error}",
        "benchmark_run": "Run the standard benchmark",
        "benchmark_info": "Times each preset through the app's own queue (after the jobs already waiting) and "
        "writes a table to outputs/benchmarks. `python scripts/benchmark.py --help` has more.",
        "benchmark_running": "Benchmark running: {done}/{total} runs…",
        "benchmark_busy": "A benchmark is already running.",
        "benchmark_failed": "The benchmark failed; the log says why.",
    },
    "zh": {
        "title": "Cinescribe",
        "tagline": "图片和文字生成视频，语音转文字——在你自己的 GPU 上。",
        "demo_banner": "**演示模式**：所有模型都是在本机构建的随机初始化微型模型。生成的视频是噪声；"
        "应用、队列、进度和输出与真实权重时完全一样。",
        "language": "语言",
        "tab_t2v": "文字生成视频",
        "tab_system": "系统",
        "model": "模型",
        "preset": "预设",
        "preset_info": "同时设置分辨率、帧数、步数、引导系数和偏移；所有数值都可以再修改。",
        "prompt": "提示词",
        "prompt_placeholder": "日落时分，一只猫在海滩上散步，电影感，特写",
        "negative_prompt": "反向提示词",
        "advanced": "高级设置",
        "resolution": "分辨率",
        "aspect": "画面比例",
        "size_note": "输出尺寸：**{width} × {height}**，{frames} 帧 = {seconds:.1f} 秒（{fps} fps）",
        "frames": "帧数",
        "frames_info": "Wan 生成 4n+1 帧（81 帧 = 16 fps 下 5 秒），LTX-2 生成 8n+1 帧（121 帧 = 24 fps 下 5 秒）；其他数值会被取整。",
        "duration": "时长（秒，0 = 按帧数）",
        "steps": "步数",
        "guidance": "引导系数",
        "shift": "流偏移（shift）",
        "seed": "种子（-1 = 随机）",
        "fps": "每秒帧数",
        "clips": "生成数量",
        "generate": "生成",
        "stop": "停止",
        "video": "视频",
        "files": "文件（视频及其参数）",
        "used_seed": "使用的种子",
        "job_settings": "随视频保存的参数",
        "status_idle": "就绪。",
        "status_queued": "排队中：第 {position} 位。",
        "status_loading": "正在加载模型（仅在启动或释放显存后的第一个任务）…",
        "status_running": "第 {clip}/{clips} 个 · {stage} · 第 {step}/{total} 步",
        "status_done": "完成：{count} 个视频，用时 {seconds:.1f} 秒，保存在 {folder}",
        "status_cancelled": "已停止。正在生成的视频没有写入文件。",
        "status_failed": "失败：{error}",
        "status_waited": "（之前在队列中等待了 {seconds:.1f} 秒）",
        "status_stopped_kept": "停止时最后一个视频即将完成：已保留（共写入 {count} 个视频），没有开始新的视频。",
        "duration_info": "按模型的帧率换算成帧数；0 表示使用帧数。",
        "negative_info": "希望避免的内容。Wan 自带的默认值是中文写的（模型就是这样训练的）；实际使用的文字记录在设置文件中。",
        "preset_Preview": "预览", "preset_Standard": "标准", "preset_High quality": "高质量",
        "preset_Quick preview": "快速预览", "preset_Turbo": "极速",
        "restart_confirm": "现在重启应用吗？排队中的任务会保留；正在运行的任务会从头开始。",
        "settings_table_setting": "参数",
        "settings_table_value": "值",
        "settings_json": "JSON 原文",
        "settings_size": "尺寸与时长",
        "settings_time": "生成用时（所有阶段）",
        "stage_load": "加载模型",
        "stage_text_encode": "编码提示词",
        "stage_denoise": "去噪",
        "stage_decode": "解码",
        "stage_encode": "写入 mp4",
        "live_title": "实时",
        "live_idle": "没有正在运行的任务。",
        "preview": "预览（颜色为近似值）",
        "log": "日志",
        "strip": "{device} · {memory} · 模型：{models} · 队列：{queue}",
        "strip_memory_gpu": "显存 {used:.1f}/{total:.1f} GiB",
        "strip_memory_cpu": "内存 {used:.1f}/{total:.1f} GiB",
        "strip_none": "无",
        "release_vram": "释放显存",
        "release_info": "在任务之间卸载所有常驻模型并归还显存。",
        "released": "已释放 {models}：归还 {freed:.2f} GiB（占用 {before:.2f} → {after:.2f} GiB）。",
        "released_nothing": "没有常驻模型；归还 {freed:.2f} GiB。",
        "restart": "重启应用",
        "restart_info": "重启应用；页面会自动重新连接。排队中的任务会保留，重启后继续运行；正在运行的任务会从头重新开始。",
        "restarting": "正在重启……应用恢复后页面会自动刷新。",
        "system_info": "系统",
        "settings_title": "启动参数",
        "outputs_folder": "输出文件夹",
        "err_prompt_empty": "请填写提示词：当前为空。",
        "err_prompt_long": "提示词过长；上限为 {limit} 个字符。",
        "err_frames_type": "帧数必须是整数，而不是 {value}。",
        "err_frames_range": "帧数必须在 {low:g} 到 {high:g} 之间，而不是 {value:g}。",
        "err_steps_type": "步数必须是整数，而不是 {value}。",
        "err_steps_range": "步数必须在 {low:g} 到 {high:g} 之间，而不是 {value:g}。",
        "err_seed_type": "种子必须是整数（或 -1 表示随机），而不是 {value}。",
        "err_seed_range": "种子必须在 {low:g} 到 {high:g} 之间，而不是 {value:g}。",
        "err_guidance_type": "引导系数必须是数字，而不是 {value}。",
        "err_guidance_range": "引导系数必须在 {low:g} 到 {high:g} 之间，而不是 {value:g}。",
        "err_shift_type": "流偏移必须是数字，而不是 {value}。",
        "err_shift_range": "流偏移必须在 {low:g} 到 {high:g} 之间，而不是 {value:g}。",
        "err_fps_type": "每秒帧数必须是整数，而不是 {value}。",
        "err_fps_range": "每秒帧数必须在 {low:g} 到 {high:g} 之间，而不是 {value:g}。",
        "err_clips_type": "生成数量必须是整数，而不是 {value}。",
        "err_clips_range": "生成数量必须在 {low:g} 到 {high:g} 之间，而不是 {value:g}。",
        "err_duration_type": "时长必须是数字，而不是 {value}。",
        "err_duration_range": "时长必须在 {low:g} 到 {high:g} 秒之间，而不是 {value:g}。",
        "err_model_missing": "本机没有 {model}（{repo}）。请在「模型」页下载（或运行：{command}）。",
        "err_oom": "GPU 显存不足。“释放显存”可卸载之前任务留下的模型；视频任务可减少帧数或降低分辨率，"
        "或使用 --memory-level model_offload 启动。",
        "err_oom_lowest_level": "即使在最低显存档位（逐层卸载、VAE 分块解码）下，{model} 生成 {frames} 帧 "
        "{width} × {height} 仍然显存不足。请减少帧数或降低分辨率、换用更小的模型，或关闭其他占用 GPU 的程序；"
        "“释放显存”可卸载之前任务留下的模型。",
        "err_step_cache_type": "步骤缓存阈值必须是数字，而不是 {value}。",
        "err_step_cache_range": "步骤缓存阈值必须在 {low:g} 到 {high:g} 之间，而不是 {value:g}。",
        "err_step_cache_unsupported": "步骤缓存仅适用于 Wan 模型；{model} 没有可跳过的 Transformer 块。请设为 0。",
        "step_cache": "步骤缓存（0 = 关闭）",
        "step_cache_info": "在变化很小的步骤中跳过模型的大部分计算：更快，但生成的视频与不使用时不同。"
        "0.05–0.1 差别较小；该值会记录在设置文件中。",
        "err_restarting": "应用正在重启，请稍后再试。",
        "err_path_invalid": "路径 {value} 无效。",
        "err_path_outside": "{value} 不在本应用的文件夹内；请把文件放到 {folder}，或直接上传。",
        "err_not_your_job": "这个任务属于其他用户；你只能停止或查看自己的任务。",
        "doctor_run": "运行检查",
        "doctor_status": "状态",
        "doctor_check": "检查项",
        "doctor_detail": "结果",
        "doctor_fix": "解决方法",
        "doctor_header": "**检查结果**（与 `python scripts/doctor.py` 相同）",
        "doctor_failed": "检查无法运行：{error}",
        "benchmark_run": "运行标准基准测试",
        "benchmark_info": "通过应用自己的队列（排在已有任务之后）测量每个预设的耗时，"
        "并把表格写入 outputs/benchmarks。更多选项见 `python scripts/benchmark.py --help`。",
        "benchmark_running": "基准测试进行中：{done}/{total} 次运行…",
        "benchmark_busy": "已有基准测试在运行。",
        "benchmark_failed": "基准测试失败；原因见日志。",
    },
}


def _add_tables() -> None:
    """Each tab may keep its texts in a module of its own (``ui/strings_<task>.py``); merge them in."""
    from . import strings_asr, strings_batch, strings_history, strings_i2v, strings_lora, strings_models

    for table in (strings_i2v.STRINGS, strings_asr.STRINGS, strings_batch.STRINGS, strings_history.STRINGS,
                  strings_models.STRINGS, strings_lora.STRINGS):
        for lang, texts in table.items():
            clash = set(texts) & set(STRINGS[lang])
            if clash:
                raise ValueError(f"UI text keys defined twice: {sorted(clash)}")
            STRINGS[lang].update(texts)


_add_tables()


def normalise_language(code: str | None) -> str:
    """``zh-CN``, ``zh-Hans``, ``zh`` -> ``zh``; anything else -> ``en``."""
    return "zh" if str(code or "").lower().startswith("zh") else "en"


def request_language(lang: str | None, request=None) -> str:
    """The session's chosen language, else the caller's ``Accept-Language`` (API clients), else English."""
    if lang:
        return normalise_language(lang)
    headers = getattr(request, "headers", None) or {}
    return normalise_language(headers.get("accept-language", "en"))


# The catalogue's model notes (pipelines/families/ keeps the English), in Chinese.
MODEL_NOTES_ZH = {
    "wan2.1-t2v-1.3b": "以 480p 训练；720p 也能用，但不是它的设计分辨率。",
    "wan2.1-t2v-14b-turbo": "步数与引导蒸馏：4 步、引导系数 1.0。输出与基础模型不同。",
    "wan2.2-ti2v-5b": "它的 VAE 在空间上压缩 16 倍：尺寸是 32 的倍数。24 fps。",
    "wan2.2-t2v-a14b": "高噪声与低噪声两个专家模型，都常驻显存。",
    "i2vgen-xl": "以 16 帧片段训练；VAE 与 UNet 使用同一精度（VAE 不用 fp32）。",
    "wan2.1-i2v-14b-480p-turbo": "步数与引导蒸馏：4 步、引导系数 1.0。输出与基础模型不同。",
    "wan2.2-ti2v-5b-i2v": "与文字生成视频条目相同的权重；VAE 压缩 16 倍：尺寸是 32 的倍数。24 fps。",
    "wan2.2-i2v-a14b": "高噪声与低噪声两个专家模型，都常驻显存。可以指定结尾帧。",
    "ltx2-t2v": "同时生成声音（mp4 中的 AAC 音轨）。帧数为 8n+1，尺寸是 32 的倍数，24 fps。",
    "ltx2-t2v-distilled": "蒸馏 LoRA：8 步、引导系数 1.0。输出与基础模型不同。同时生成声音（mp4 中的 AAC 音轨）。帧数为 8n+1，尺寸是 32 的倍数，24 fps。",
    "ltx2-i2v": "同时生成声音（mp4 中的 AAC 音轨）。帧数为 8n+1，尺寸是 32 的倍数，24 fps。",
    "ltx2-i2v-distilled": "蒸馏 LoRA：8 步、引导系数 1.0。输出与基础模型不同。同时生成声音（mp4 中的 AAC 音轨）。帧数为 8n+1，尺寸是 32 的倍数，24 fps。",
    "whisper-large-v3": "最准确；可转写，也可翻译成英文。",
    "whisper-large-v3-turbo": "准确度相近，速度快得多；未针对翻译训练（翻译会使用 large-v3）。",
    "whisper-small": "在 CPU 上也足够快。",
    "distil-whisper-large-v3": "实际上只适用于英文；比 large-v3 快约 6 倍，准确度接近。",
}


def model_note(lang: str, spec) -> str:
    """A catalogue model's note in ``lang`` (the registry's English when no translation exists)."""
    if normalise_language(lang) == "zh" and spec.id in MODEL_NOTES_ZH:
        return MODEL_NOTES_ZH[spec.id]
    return spec.notes


def t(lang: str, key: str, **params: Any) -> str:
    """The text for ``key`` in ``lang`` (English when missing), formatted with ``params``."""
    table = STRINGS.get(normalise_language(lang), STRINGS["en"])
    text = table.get(key) or STRINGS["en"].get(key) or key
    if params:
        try:
            return text.format(**params)
        except (KeyError, ValueError, IndexError):
            return text
    return text


def error_text(lang: str, key: str, params: dict, fallback: str) -> str:
    """A user-facing error in ``lang`` when the key is known, else the original English message."""
    full_key = f"err_{key}"
    if key and full_key in STRINGS["en"]:
        if key.startswith("lora_") and params.get("why"):  # the LoRA rules' English reason, in the page's language
            from .strings_lora_reasons import reason_text

            params = {**params, "why": reason_text(normalise_language(lang), str(params["why"]))}
        try:
            return STRINGS[normalise_language(lang)][full_key].format(**params)
        except (KeyError, ValueError, IndexError):
            pass
    return fallback


class Translator:
    """Remembers which component attribute shows which text key, to re-label the page on a switch."""

    def __init__(self) -> None:
        self._bindings: list[tuple[Any, dict[str, str | tuple[str, dict]]]] = []

    def bind(self, component, **attribute_keys: str | tuple[str, dict]):
        """``label="key"``, or ``value=("key", {"param": ...})`` for a text with fixed parameters.

        The component starts with the English texts of its keys, so the first English load already shows the
        full labels (a language switch only runs when the language changes).
        """
        self._bindings.append((component, attribute_keys))
        for attribute, key in attribute_keys.items():
            if hasattr(component, attribute):
                setattr(component, attribute, t("en", key[0], **key[1]) if isinstance(key, tuple) else t("en", key))
        return component

    @property
    def components(self) -> list:
        return [component for component, _ in self._bindings]

    def updates(self, lang: str) -> list:
        import gradio as gr

        def text(key):
            return t(lang, key[0], **key[1]) if isinstance(key, tuple) else t(lang, key)

        return [gr.update(**{attr: text(key) for attr, key in keys.items()}) for _, keys in self._bindings]
