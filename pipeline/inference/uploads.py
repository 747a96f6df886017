"""How a classifier judges a photo a person uploads (`/v1/classify`, and the `photo` views
of `linewatch model eval`): the photo as uploaded and the photo as the line would cut the
part (on a belt, cropped with the line's margin), each in the four orientations a tile
can lie in on a belt (as is, mirrored, upside down, turned 180°); the eight views'
probabilities averaged, in one predictor call.

The shipped model is trained mostly on line views. On the 214 validation photos
(MODEL_CARD, "Uploads judged twice") the photo and its line view averaged beat either
alone (macro-F1 0.931 against 0.886 and 0.924, previous model). The orientation alone
moves an upload's figures as much as a recipe does (macro-F1 0.937–0.966, shipped
model); averaging the four keeps macro-F1 (0.937) and removes the false alarms at the
shipped threshold (2 of 151 good photos to 0, recall 0.968 both; best within 1 % false
alarms 0.937 → 0.984), and a mirrored photo gets the same answer as the photo. An
upload costs eight views of inference (on the API's one CPU thread 95 ms against 25 ms
for two: bench/RESULTS.md, "POST /v1/classify"); a line view one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np

from linewatch.pipeline.inference.classifier import Classifier
from linewatch.pipeline.inference.loading import Model
from linewatch.pipeline.inference.prediction import Prediction, predict, predictions
from linewatch.pipeline.video.belt_view import canonical_rgb

ORIENTATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "as is": lambda view: view,
    "mirrored": lambda view: np.ascontiguousarray(view[:, ::-1]),
    "upside down": lambda view: np.ascontiguousarray(view[::-1]),
    "turned 180°": lambda view: np.ascontiguousarray(view[::-1, ::-1]),
}  # not the transpose: a tile on the belt is never filmed on its side


def upload_probs(classifier: Classifier, images: Sequence[np.ndarray]) -> np.ndarray:
    """Class probabilities [N, classes] of uploaded RGB photos: for each, the mean over
    `judged_views`."""
    if not images:
        return classifier.predict([])
    size = classifier.preprocessor.output_size[0]
    views = [view for image in images for view in judged_views(image, size)]
    probs = classifier.predict(views)
    return probs.reshape(len(images), -1, probs.shape[1]).mean(axis=1)


def judged_views(image: np.ndarray, size: int) -> list[np.ndarray]:
    """The views an upload is judged on: the photo and its line view, each in every
    orientation."""
    both = (image, line_view(image, size))
    return [orient(view) for view in both for orient in ORIENTATIONS.values()]


def predict_uploads(model: Model, images: Sequence[np.ndarray]) -> list[Prediction | None]:
    """One Prediction per uploaded RGB photo (None: non-finite scores)."""
    if not isinstance(model, Classifier):
        return predict(model, images)
    return predictions(upload_probs(model, images), model.info)


def line_view(image: np.ndarray, size: int) -> np.ndarray:
    """The RGB photo as the line's crop of the part: grey, on the belt, `size` square."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return canonical_rgb(grey, size)
