"""The tasks: text to video (``t2v``), image to video (``i2v``), speech to text (``asr``) and batches of
them. Each validates a request before it is queued, runs it through its model family and writes outputs."""
