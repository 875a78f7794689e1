"""Model families, one module each: catalogue entries and presets, the class that loads them and how a job
calls them, memory and FLOP estimates, latent preview, tiny demo build and real-size random-weight config.
``catalogue`` lists the families; the rest of the app asks it, never a family's private names."""
