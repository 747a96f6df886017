"""Video in and out: PyAV sources, codecs, camera state, the video writer."""
