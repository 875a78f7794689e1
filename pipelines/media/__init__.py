"""Media in and out: ffmpeg (mp4 writing and probing), images for image to video, audio decoding with the
silence gate, subtitles, and cheap latent previews."""
