"""Creators' LoRAs: the LoRA folder (``library``: headers read without torch, what fits which model, the
request's ``loras`` text), the checks at submit and the hashes (``check``), and the adapters on the resident
pipeline (``adapters``: loaded once as named adapters, switched with ``set_adapters``). Each family says
what it takes (``lora_check`` and friends in ``families/base.py``)."""
