"""The device side: the one worker thread that touches the GPU, the resident-model manager, loading from
the Hugging Face cache or a folder, memory and memory levels, attention kernels, the fast path and the
prompt-embedding cache."""
