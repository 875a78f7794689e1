"""Cinescribe's model side: everything below the page.

Subpackages, one concern each; imports point one way (tasks -> families / device -> studio / media):

- ``studio``   bookkeeping without torch: jobs, the queue and its store, History, outputs, paths, settings, log
- ``media``    ffmpeg in and out, images, audio, subtitles, latent previews
- ``device``   the GPU side: the worker, resident models, loading, memory levels, attention, fast path
- ``families`` one module per model family and the catalogue that lists them
- ``tasks``    t2v, i2v, asr (and batches): validate a request, run it through a family, write outputs
- ``scale``    executors beyond one GPU: Ray workers, context-parallel ranks
- ``bench``    benchmark workloads and reports, FLOP counts, real-size random weights

Nothing here imports gradio; importing any module has no side effects and never touches CUDA.
"""
