"""Video in and out: PyAV sources, codecs, camera state, parts (locate, track, view), writer."""
