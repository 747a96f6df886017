"""How a classifier judges a photo a person uploads (`/v1/classify`, and the `photo` views
of `linewatch model eval`): the photo as uploaded and the photo as the line would cut the
part (on a belt, cropped with the line's margin), their probabilities averaged.

The shipped model is trained mostly on line views. On the 214 validation photos
(MODEL_CARD, "Uploads judged twice") the shipped model scores macro-F1 0.886 on the
photo alone, 0.924 on its line view and 0.931 on the mean, with recall 0.968 at 1.3 %
false alarms: the mean is at least as good as either view on every figure. An upload
costs two views of inference; a detector finds the part itself and sees the photo once.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from linewatch.pipeline.inference.classifier import Classifier
from linewatch.pipeline.inference.loading import Model
from linewatch.pipeline.inference.prediction import Prediction, predict, predictions
from linewatch.pipeline.video.belt_view import canonical_rgb


def upload_probs(classifier: Classifier, images: Sequence[np.ndarray]) -> np.ndarray:
    """Class probabilities [N, classes] of uploaded RGB photos, each judged as uploaded
    and as the line would cut it (the mean of the two)."""
    if not images:
        return classifier.predict([])
    size = classifier.preprocessor.output_size[0]
    probs = classifier.predict([*images, *(line_view(image, size) for image in images)])
    return (probs[: len(images)] + probs[len(images) :]) / 2


def predict_uploads(model: Model, images: Sequence[np.ndarray]) -> list[Prediction | None]:
    """One Prediction per uploaded RGB photo (None: non-finite scores)."""
    if not isinstance(model, Classifier):
        return predict(model, images)
    return predictions(upload_probs(model, images), model.info)


def line_view(image: np.ndarray, size: int) -> np.ndarray:
    """The RGB photo as the line's crop of the part: grey, on the belt, `size` square."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return canonical_rgb(grey, size)
