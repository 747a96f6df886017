"""Video in and out: PyAV sources, codecs, camera state, part crops, the video writer."""
