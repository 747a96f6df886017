"""Video in and out: sources, codecs, camera state, parts, commissioning, live view."""
