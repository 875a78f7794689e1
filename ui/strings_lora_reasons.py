"""The reasons a LoRA does not fit a model, in Simplified Chinese. The families' LoRA rules (``check`` of
``pipelines/families/wan_lora.py`` and ``ltx2_lora.py``) and the LoRA library (``pipelines/loras/library.py``)
say why in English sentences (``pipelines`` holds no translations); each sentence is matched here by a pattern
whose named groups (sizes, keys, layers, model titles) are carried over into the Chinese one. A group called
``why`` is itself a reason, translated the same way; ``model`` is a catalogue title. A sentence no pattern knows
stays in English (``tests/test_lora_reasons.py`` and ``test_lora_reasons_ltx2.py`` build a file for each reason
and fail on one without Chinese)."""

from __future__ import annotations

import re

DEMO_SIZE = (" (demo size)", "（演示尺寸）")  # what wan_lora.check and ltx2_lora.check add to a title in --demo

_PATTERNS: tuple[tuple[str, str], ...] = (
    # the library: files that are not whole safetensors files, and models that take no LoRAs
    (r"it is (?P<size>\d+) bytes long: too short to be a safetensors file\.",
     "文件只有 {size} 字节：太短，不是 safetensors 文件。"),
    (r"its header says (?P<length>\d+) bytes but the file has (?P<size>\d+): not a safetensors file, or cut short\.",
     "文件头声明 {length} 字节，但文件只有 {size} 字节：不是 safetensors 文件，或文件不完整。"),
    (r"it cannot be read \((?P<error>.*)\)\.", "无法读取该文件（{error}）。"),
    (r"its header is not the JSON a safetensors file starts with \(a damaged file\?\)\.",
     "文件头不是 safetensors 文件开头应有的 JSON（文件损坏？）。"),
    (r"its header is not the JSON object a safetensors file starts with\.",
     "文件头不是 safetensors 文件开头应有的 JSON 对象。"),
    (r"its header entry (?P<name>.+) is not a tensor description \(a damaged file\?\)\.",
     "文件头条目 {name} 不是张量描述（文件损坏？）。"),
    (r"its tensor (?P<name>.+) does not add up \((?P<shape>\(.*?\)), (?P<dtype>\w+)\): a damaged file\.",
     "张量 {name} 的大小对不上（{shape}，{dtype}）：文件已损坏。"),
    (r"it is cut short: its tensors need (?P<need>\d+) bytes, the file has (?P<size>\d+) "
     r"\(an unfinished download\?\)\.",
     "文件不完整：其张量需要 {need} 字节，文件只有 {size} 字节（下载未完成？）。"),
    (r"it holds no tensors\.", "文件中没有张量。"),
    (r"Not for (?P<model>.+?): (?P<why>.+)", "不适用于 {model}：{why}"),
    (r"(?P<model>.+?) cannot take LoRAs here: (?P<why>.+)", "{model} 在这里不能使用 LoRA：{why}"),
    (r"no model of the catalogue takes LoRAs\.", "目录中没有能使用 LoRA 的模型。"),
    # why a family takes none (its LORA_SUPPORT; pipelines/loras/check.py's default and --fp8)
    (r"diffusers' I2VGenXLPipeline has no LoRA loader\.", "diffusers 的 I2VGenXLPipeline 没有 LoRA 加载器。"),
    (r"its LoRA loader \((?P<loader>\w+)\) is not wired to the LoRA folder yet; only the distilled LoRA of its "
     r"catalogue entries is used\.",
     "它的 LoRA 加载器（{loader}）尚未接入 LoRA 文件夹；只使用其目录条目自带的蒸馏 LoRA。"),
    (r"it has no LoRA rules\.", "它没有 LoRA 规则。"),
    (r"not with --fp8 weight storage yet; start without --fp8 to use them\.",
     "暂不支持 --fp8 权重存储；请不带 --fp8 启动后再使用。"),
    # the families' rules (wan_lora.check, ltx2_lora.check): {family} is "Wan" or "LTX-2"
    (r"it has text-encoder layers \((?P<key>.+)\); (?P<family>[\w.-]+) LoRAs here change the transformer only\.",
     "它含有文本编码器的层（{key}）；这里的 {family} LoRA 只改动 transformer。"),
    (r"it has text-encoder layers \((?P<key>.+)\); (?P<family>[\w.-]+) LoRAs here change the transformer and text "
     r"connectors only\.",
     "它含有文本编码器的层（{key}）；这里的 {family} LoRA 只改动 transformer 和文本连接器。"),
    (r"its layers are transformer_blocks\.N \(a LoRA for LTX-2 or another DiT\), not Wan's blocks\.",
     "它的层是 transformer_blocks.N（LTX-2 或其他 DiT 的 LoRA），不是 Wan 的 blocks。"),
    (r"it is a Wan LoRA \(its key (?P<key>.+) names a layer of Wan's blocks\), not one for LTX-2\.",
     "这是 Wan 的 LoRA（它的键 {key} 对应 Wan 的 blocks 中的层），不是 LTX-2 的。"),
    (r"its keys are in no LoRA layout (?P<family>[\w.-]+) reads \(first key: (?P<key>.+)\)\.",
     "它的键不属于 {family} 能读取的任何 LoRA 格式（第一个键：{key}）。"),
    (r"its key (?P<key>.+) names no layer of (?P<family>[\w.-]+)'s transformer\.",
     "它的键 {key} 不对应 {family} transformer 的任何层。"),
    (r"it has (?P<blocks>\d+) transformer blocks; (?P<model>.+) has (?P<has>\d+)\.",
     "它有 {blocks} 个 transformer 块；{model} 只有 {has} 个。"),
    (r"it is for a Wan 2\.1 image-to-video model \(image layers\); (?P<model>.+) has none\.",
     "它是为 Wan 2.1 图生视频模型制作的（含图像层）；{model} 没有这些层。"),
    (r"its layer (?P<layer>\S+) is not in (?P<model>.+)\.", "它的层 {layer} 不在 {model} 中。"),
    (r"its layer (?P<layer>\S+) has an alpha but no LoRA weights\.", "它的层 {layer} 有 alpha，但没有 LoRA 权重。"),
    (r"its layer (?P<layer>\S+) has a bias but no LoRA weights\.", "它的层 {layer} 有偏置，但没有 LoRA 权重。"),
    (r"its layer (?P<layer>\S+) has only half a LoRA \(down without up, or up without down\)\.",
     "它的层 {layer} 只有半个 LoRA（有 down 无 up，或有 up 无 down）。"),
    (r"its layer (?P<layer>\S+) has down (?P<down>\[.*?\]) and up (?P<up>\[.*?\]): the ranks differ\.",
     "它的层 {layer} 的 down 为 {down}、up 为 {up}：秩不一致。"),
    (r"its layer (?P<layer>\S+) is (?P<out>\d+) x (?P<inner>\d+), but (?P<model>.+)'s is (?P<model_out>\d+) x "
     r"(?P<model_in>\d+) \(made for another size of Wan\?\)\.",
     "它的层 {layer} 为 {out} x {inner}，而 {model} 的是 {model_out} x {model_in}（为另一种规模的 Wan 制作？）。"),
    (r"its layer (?P<layer>\S+) is (?P<out>\d+) x (?P<inner>\d+), but (?P<model>.+)'s is (?P<model_out>\d+) x "
     r"(?P<model_in>\d+) \(made for another LTX model or size\?\)\.",
     "它的层 {layer} 为 {out} x {inner}，而 {model} 的是 {model_out} x {model_in}（为另一个 LTX 模型或规模制作？）。"),
    (r"its bias for (?P<layer>\S+) has (?P<values>\[.*?\]) values; (?P<model>.+)'s layer has (?P<has>\d+)\.",
     "它的层 {layer} 的偏置形状为 {values}，而 {model} 的该层有 {has} 个值。"),
    (r"it has no LoRA weights Wan takes \(only biases or norm differences\)\.",
     "它没有 Wan 能用的 LoRA 权重（只有偏置或归一化层的差值）。"),
)
PATTERNS = tuple((re.compile(pattern, re.DOTALL), chinese) for pattern, chinese in _PATTERNS)


def reason_zh(reason: str) -> str | None:
    """The Chinese of one English reason, or None when no pattern knows it (or a reason inside it)."""
    reason = str(reason or "").strip()
    for pattern, chinese in PATTERNS:
        match = pattern.fullmatch(reason)
        if match is None:
            continue
        parts = dict(match.groupdict())
        if "why" in parts:
            parts["why"] = reason_zh(parts["why"])
            if parts["why"] is None:
                return None
        if "model" in parts:
            parts["model"] = parts["model"].replace(*DEMO_SIZE)
        return chinese.format(**parts).replace("） ", "）")
    return None


def reason_text(lang: str, reason: str) -> str:
    """``reason`` as the page shows it: in Chinese on a Chinese page where a pattern knows it, else as given."""
    if not reason or not str(lang or "").lower().startswith("zh"):
        return reason
    return reason_zh(reason) or reason
