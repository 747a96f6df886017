"""Recognition by retrieval: the gallery of labelled view embeddings beside a model.

Its file (store), its `Gallery:` section of inference.yml (settings), a model folder's
searched gallery with the reviewed additions (folder), what a reviewed part adds
(views), and the exact cosine
nearest-neighbour search with view and part novelty (search).
"""
